//! `veil sink`'s loop: the change topic's partition assigned explicitly at the offset stored in
//! dev (auto-commit off), every offset seen in order (`fence::offset_step`; a broker that skips
//! offsets is asked again from earlier), envelopes handed to the applier, dev committed in
//! batches at transaction boundaries, confirmations written to the sink's audit chain.

use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;
use tokio::sync::watch;

use super::applier::Applier;
use super::confirm::SinkAudit;
use super::error::SinkError;
use super::fence::{OffsetStep, offset_step};
use crate::audit::{AuditLog, NoAudit};
use crate::config::Config;
use crate::kafka::error::kerr;
use crate::kafka::{admin, client};
use crate::pg::lsn::fmt_lsn;
use crate::proto;

/// How many messages before the checkpoint the sink starts fetching (see `run`); doubled at
/// every hole the broker leaves. Messages carry batches of envelopes (up to the message limit
/// each), so a fixed rewind of thousands of messages could mean gigabytes fetched again at
/// every start.
const REWIND: i64 = 256;

/// Runs `veil sink` until `shutdown` turns true or an error stops it.
pub async fn run(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<(), SinkError> {
    crate::metrics::zero("sink");
    let sink = cfg.sink()?.clone();
    let kafka = cfg.kafka()?.clone();
    let mut applier = Applier::connect(&sink.dsn, &kafka.topic).await?;
    admin::ensure_topic(&kafka, &kafka.topic, false).await?;
    let consumer: StreamConsumer =
        client::client_config_with(&kafka, &[("fetch.wait.max.ms", "50")])
            .set("group.id", format!("veil-sink-{}", kafka.topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(kerr)?;
    tracing::info!(topic = %kafka.topic, offset = applier.next_offset(), epoch = applier.epoch(),
                   last_commit = %fmt_lsn(applier.last_commit_lsn()), "sink started");
    // The sink's confirmations: its own audit chain, signed with its own key.
    // Without an `[audit]` section the records go to `NoAudit`.
    let (writer, every): (Box<dyn AuditLog>, u64) = match &cfg.audit {
        Some(a) => (
            Box::new(
                crate::audit::AuditWriter::open(
                    a,
                    crate::audit::audit_key_for(cfg, "sink/").map_err(SinkError::Config)?,
                    &kafka,
                    &format!("sink/{}", kafka.topic),
                )
                .await?,
            ),
            a.window_secs.max(1),
        ),
        None => (Box::new(NoAudit), 60),
    };
    let mut audit = SinkAudit {
        writer,
        every: Duration::from_secs(every),
        last: std::time::Instant::now(),
        txns: applier.applied_txns,
        rows: applier.applied_rows,
    };
    // Offsets of the change topic are contiguous (it is never compacted). The sink insists on
    // seeing every one of them: a broker that answers a fetch starting inside a record batch with
    // the next batch would otherwise skip events silently. So it starts a little before the
    // checkpoint (dropping what is applied), and re-fetches from before any hole it sees.
    applier.set_batch_limits(
        sink.batch_max_rows,
        Duration::from_millis(sink.batch_max_ms),
    );
    let mut rewind = REWIND;
    // The next offset the sink must see.
    let mut expected = applier.next_offset();
    let mut idle = 0u32;
    // Time per stage: consume (waiting for and decoding the next message), apply (statements),
    // commit (checkpoint and COMMIT of a dev transaction).
    const CONSUME: usize = 0;
    const APPLY: usize = 1;
    const COMMIT: usize = 2;
    let mut clock = crate::metrics::StageClock::new("sink", &["consume", "apply", "commit"]);
    'assign: loop {
        let start = (expected - rewind).max(0);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&kafka.topic, 0, Offset::Offset(start))
            .map_err(kerr)?;
        consumer.assign(&tpl).map_err(kerr)?;
        loop {
            let fetch = std::time::Instant::now();
            let msg = tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break 'assign; }
                    continue;
                }
                m = tokio::time::timeout(Duration::from_millis(100), consumer.recv()) => m,
            };
            match msg {
                Err(_) => {
                    // Idle: commit what is applied.
                    let t = std::time::Instant::now();
                    applier.flush().await?;
                    clock.add(COMMIT, t);
                    clock.report();
                    audit.confirm(&mut applier, false).await?;
                    idle += 1;
                    // Idle for a second inside a source transaction (the stream holds in it):
                    // commit the whole ones before it, and read it again from its Begin.
                    if idle >= 10
                        && let Some(begin) = applier.set_aside_open_txn().await?
                    {
                        applier.flush().await?;
                        audit.confirm(&mut applier, false).await?;
                        expected = begin;
                        continue 'assign;
                    }
                }
                Ok(Err(e)) => return Err(kerr(e).into()),
                Ok(Ok(m)) => {
                    idle = 0;
                    let offset = m.offset();
                    match offset_step(expected, offset) {
                        OffsetStep::AlreadyApplied => continue,
                        OffsetStep::Apply => {}
                        OffsetStep::Refetch => {
                            if start == 0 || rewind >= 1_000_000 {
                                return Err(SinkError::Gap {
                                    offset,
                                    commit_lsn: format!("offset {offset}"),
                                    expected_prev: format!("offset {expected}"),
                                    applied: "offsets the broker no longer has (retention?)".into(),
                                });
                            }
                            tracing::warn!(
                                expected,
                                got = offset,
                                "the broker skipped offsets; fetching again from earlier"
                            );
                            metrics::counter!(crate::metrics::SINK_REFETCHES).increment(1);
                            rewind = (rewind * 2).min(1_000_000);
                            continue 'assign;
                        }
                    }
                    expected = offset + 1;
                    let env =
                        proto::Envelope::decode(m.payload().unwrap_or_default()).map_err(|e| {
                            SinkError::Decode {
                                offset,
                                message: e.to_string(),
                            }
                        })?;
                    clock.add(CONSUME, fetch);
                    let t = std::time::Instant::now();
                    let next = applier.apply(offset, env).await?;
                    clock.add(APPLY, t);
                    if let super::applier::Next::ReadFrom(from) = next {
                        audit.confirm(&mut applier, false).await?;
                        expected = from;
                        continue 'assign;
                    }
                    if applier.flush_due() {
                        let t = std::time::Instant::now();
                        applier.flush().await?;
                        clock.add(COMMIT, t);
                        clock.report();
                        audit.confirm(&mut applier, false).await?;
                        let mut c = TopicPartitionList::new();
                        let _ = c.add_partition_offset(&kafka.topic, 0, Offset::Offset(offset + 1));
                        let _ = consumer.commit(&c, CommitMode::Async);
                    }
                }
            }
        }
    }
    applier.flush().await?;
    clock.report();
    audit.confirm(&mut applier, true).await?;
    tracing::info!(
        rows = applier.applied_rows,
        txns = applier.applied_txns,
        "sink stopped"
    );
    Ok(())
}
