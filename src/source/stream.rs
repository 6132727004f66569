//! `veil stream`: the production-side replication loop. Fences off a predecessor, resumes the
//! epoch or starts a new one with a snapshot (`epoch`, `snapshot`), then reads pgoutput and hands
//! every message to the pipeline. Status updates confirm only what the event sink acknowledged
//! (`progress`); a heartbeat message keeps the slot moving when no published table changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

use super::conn::ReplicationConn;
use super::epoch::{self, Start};
use super::error::StreamError;
use super::hold::{NoKeepAlive, ReplKeepAlive, now_us, status_update};
use super::pgoutput::{self, LogicalMessage, ReplicationMessage};
use super::pipeline::{DECODE, HEARTBEAT_PREFIX, PUBLISH, Streamer};
use super::progress::{Activity, Progress};
use super::spool::Spool;
use super::window::WindowAcc;
use crate::audit::{AuditLog, AuditWriter, NoAudit};
use crate::config::{Config, ConfigError};
use crate::deid::registry::Registry;
use crate::deid::tokenize::{MasterKey, NullStore};
use crate::deid::vault::{TokenVault, Vault};
use crate::kafka::admin;
use crate::kafka::producer::Publisher;
use crate::pg::catalog;
use crate::pg::lsn::fmt_lsn;
use crate::proto::{self, envelope::Event};

/// Milliseconds per start-up step, in order.
struct StartupClock {
    started: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, u128)>,
}

impl StartupClock {
    fn new() -> Self {
        let now = std::time::Instant::now();
        StartupClock {
            started: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((step, (now - self.last).as_millis()));
        self.last = now;
    }

    fn total_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }
}

impl std::fmt::Display for StartupClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, ms)) in self.steps.iter().enumerate() {
            write!(f, "{}{step} {ms} ms", if i > 0 { ", " } else { "" })?;
        }
        Ok(())
    }
}

/// A random, non-zero id for this process run.
fn new_run_id() -> u64 {
    rand::random::<u64>().max(1)
}

/// Runs `veil stream` until `shutdown` turns true or an error stops it. A hold that released
/// the replication connection ends in a new run that reads again from the confirmed LSN.
pub async fn run(cfg: &Config, shutdown: watch::Receiver<bool>) -> Result<(), StreamError> {
    crate::metrics::zero("stream");
    loop {
        match run_once(cfg, shutdown.clone()).await {
            // Stopped just as the hold ended: an orderly stop (the next start reads from the
            // confirmed LSN).
            Err(StreamError::ResumeAfterRelease) if *shutdown.borrow() => return Ok(()),
            Err(StreamError::ResumeAfterRelease) => {
                tracing::info!(
                    "hold released: reconnecting and reading again from the confirmed LSN"
                );
            }
            other => return other,
        }
    }
}

/// One run: one replication connection, from start (resume or new epoch) to stop or error.
async fn run_once(cfg: &Config, shutdown: watch::Receiver<bool>) -> Result<(), StreamError> {
    let src = cfg.source()?.clone();
    let kafka = cfg.kafka()?.clone();
    let registry = Registry::load(&cfg.registry.dir)?;
    let master = MasterKey::from_config(&cfg.keys)?;
    let pgcfg = src.dsn.parse()?;

    // Time per start-up step, logged once streaming starts (what a restart costs in lag).
    let mut startup = StartupClock::new();
    let catalog_client = crate::pg::tls::connect(&pgcfg)
        .await
        .map_err(StreamError::Connect)?;
    catalog::prepare_session(&catalog_client).await?;

    let mut repl = ReplicationConn::connect(&pgcfg).await?;
    let ident = repl.simple_query("IDENTIFY_SYSTEM").await?;
    let row = ident
        .first()
        .ok_or_else(|| StreamError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
    let sysid = row.first().cloned().flatten().unwrap_or_default();
    let database = row.get(3).cloned().flatten().unwrap_or_default();
    let source_id = format!("{sysid}/{database}");

    startup.mark("connect");
    let run_lock = epoch::take_run_lock(&pgcfg, &src.slot).await?;
    epoch::wait_for_predecessor(&catalog_client, &src.slot).await?;
    startup.mark("run lock");
    admin::ensure_topic(&kafka, &kafka.topic, false).await?;
    startup.mark("topic");
    // The topic's last envelope (read after its end stayed put for a moment: a killed
    // predecessor's last produce requests land first) — read while the rest starts.
    let (k2, t2) = (kafka.clone(), kafka.topic.clone());
    let tail_reader =
        tokio::task::spawn_blocking(move || admin::read_last(&k2, &t2, Duration::from_millis(700)));

    let vault: Arc<dyn TokenVault> = match &cfg.vault {
        Some(v) => Arc::new(Vault::connect(v, &master).await?),
        None => Arc::new(NullStore),
    };
    let audit: Box<dyn AuditLog> = match &cfg.audit {
        Some(a) => Box::new(
            AuditWriter::open(
                a,
                crate::audit::audit_key(cfg)?,
                &kafka,
                &format!("stream/{source_id}"),
            )
            .await?,
        ),
        None => Box::new(NoAudit),
    };
    let publisher = Publisher::new(&kafka, &kafka.topic, &source_id)?;
    startup.mark("vault, audit, producer");
    let mut st = Streamer {
        database: database.clone(),
        source_id: source_id.clone(),
        publication: src.publication.clone(),
        slot_name: String::new(),
        key_id: master.key_id(),
        registry,
        master,
        epoch: 0,
        last_commit_lsn: 0,
        publisher: Box::new(publisher),
        catalog: catalog_client,
        plans: HashMap::new(),
        published_schemas: HashMap::new(),
        position: None,
        run_lock: Some(run_lock),
        txn: None,
        run_id: new_run_id(),
        seq: 0,
        vault,
        queue: Vec::new(),
        queued_rows: 0,
        queued_at: None,
        publishing_lsn: None,
        registry_dir: cfg.registry.dir.clone(),
        described: HashMap::new(),
        partition_roots: HashMap::new(),
        scanner: Arc::new(
            crate::deid::scanner::Scanner::new(&cfg.scanner.mrn_patterns)
                .map_err(|e| ConfigError::Invalid(format!("[scanner] {e}")))?,
        ),
        scan: super::scan_hold::ScanHolds::new(cfg.scanner.in_flight_sample),
        slot_prefix: src.slot.clone(),
        pending_holds: Vec::new(),
        phase: proto::Phase::Stream,
        audit,
        window: WindowAcc::starting(now_us()),
        window_secs: cfg
            .audit
            .as_ref()
            .map(|a| a.window_secs.max(1))
            .unwrap_or(60),
        window_count: 0,
        keepalive: Box::new(NoKeepAlive),
        hold_release: Duration::from_secs(src.hold_release_secs),
        new_epoch_reason: String::new(),
        shutdown: shutdown.clone(),
        clock: crate::metrics::StageClock::new("stream", super::pipeline::STAGES),
        backfill: super::watermark::Backfills::new(pgcfg.clone(), src.backfill_on_decision),
    };

    let tail = tail_reader
        .await
        .map_err(|e| StreamError::Protocol(format!("tail reader: {e}")))??;
    startup.mark("topic tail");
    // Resume the current epoch, or start a new one with a fresh slot and snapshot.
    // Scanner holds a predecessor kept: their tables are scanned whole until decided.
    st.load_scan_holds().await?;
    let start = epoch::decide(&st.catalog, &src.slot, tail.as_ref().map(|(_, e)| e)).await?;
    let start_lsn = match start {
        Start::Resume {
            epoch,
            slot,
            resume_lsn,
            last_commit_lsn,
        } => {
            st.epoch = epoch;
            st.slot_name = slot;
            st.last_commit_lsn = last_commit_lsn;
            tracing::info!(epoch = st.epoch, slot = %st.slot_name, lsn = %fmt_lsn(resume_lsn), "resuming");
            resume_lsn
        }
        Start::NewEpoch { after, reason } => {
            st.new_epoch_reason = reason.to_owned();
            let new = epoch::create_slot(&st.catalog, &mut repl, &src.slot, after).await?;
            st.epoch = new.epoch;
            st.slot_name = new.slot;
            let snap = crate::pg::tls::connect(&pgcfg)
                .await
                .map_err(StreamError::Connect)?;
            match super::snapshot::run(
                &mut st,
                &snap,
                &pgcfg,
                &new.snapshot_name,
                new.consistent_lsn,
                (src.snapshot_connections, src.snapshot_range_pages),
            )
            .await
            {
                Ok(_) => {}
                Err(StreamError::StoppedWhileHeld) => {
                    tracing::info!(
                        "stopped while the snapshot was held; the next start snapshots again"
                    );
                    repl.terminate().await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            new.consistent_lsn
        }
    };

    // Backfills a predecessor left running continue (a new epoch's snapshot makes them moot).
    let resumed = st.new_epoch_reason.is_empty().then_some(start_lsn);
    st.load_backfills(&src.slot, resumed).await;
    startup.mark("epoch");
    let config_hash = blake3::hash(format!("{cfg:?}").as_bytes()).to_hex()[..16].to_owned();
    st.audit_run_start(&config_hash).await?;
    st.publish(
        proto::Phase::Stream,
        Event::StreamStart(proto::StreamStart {
            resume_lsn: start_lsn,
            veil_version: env!("CARGO_PKG_VERSION").into(),
        }),
        None,
    )
    .await?;
    // A table blocked while veil was stopped: dev empties its copy now, not at its next change.
    st.publish_blocked_markers().await?;
    // A hold recorded by a predecessor is re-recorded if this run holds again.
    st.note_hold(None).await;

    repl.start_replication(&format!(
        "START_REPLICATION SLOT {} LOGICAL {} (proto_version '2', streaming 'on', messages 'true', \
         publication_names {})",
        crate::pg::quote::ident(&st.slot_name),
        fmt_lsn(start_lsn),
        crate::pg::quote::literal(&crate::pg::quote::ident(&src.publication))
    ))
    .await?;
    startup.mark("run start audited, replication started");
    tracing::info!(total_ms = startup.total_ms(), steps = %startup, "stream start-up");
    metrics::gauge!(crate::metrics::EPOCH).set(st.epoch as f64);

    // From here on a hold keeps the replication connection alive.
    let repl = Arc::new(tokio::sync::Mutex::new(repl));
    let received = Arc::new(AtomicU64::new(start_lsn));
    st.keepalive = Box::new(ReplKeepAlive {
        conn: repl.clone(),
        received: received.clone(),
        released: false,
    });
    let result = replicate(&mut st, &src, &repl, &received, start_lsn, shutdown).await;
    let confirmed = match result {
        Ok(c) => c,
        Err(StreamError::ResumeAfterRelease) => {
            // Nothing after the hold point was published; what came before is acknowledged
            // before the next run reads the tail of the topic.
            let _ = tokio::time::timeout(Duration::from_secs(30), st.publisher.drain()).await;
            st.close_window().await?;
            let body = proto::audit_record::Body::RunStop(proto::RunStop {
                run_id: st.run_id,
                reason: "a released hold ended; reading again from the confirmed LSN".into(),
            });
            st.audit(body).await?;
            return Err(StreamError::ResumeAfterRelease);
        }
        Err(e) => {
            // Error messages name tables, columns, types and LSNs, never values.
            let body = proto::audit_record::Body::Error(proto::AuditError {
                message: e.to_string(),
            });
            if let Err(ae) = st.audit(body).await {
                tracing::warn!(error = %ae, "could not audit the error");
            }
            return Err(e);
        }
    };
    // Orderly stop: wait for what is in flight, confirm it, leave.
    let _ = tokio::time::timeout(Duration::from_secs(30), st.publisher.drain()).await;
    st.clock.report();
    let acked = st.publisher.acked_lsn().max(confirmed);
    let mut conn = repl.lock().await;
    let _ = conn
        .send_copy(&status_update(acked, st.confirmable(acked)))
        .await;
    conn.terminate().await;
    drop(conn);
    st.close_window().await?;
    let body = proto::audit_record::Body::RunStop(proto::RunStop {
        run_id: st.run_id,
        reason: "shutdown requested".into(),
    });
    st.audit(body).await?;
    tracing::info!(confirmed = %fmt_lsn(acked), "stream stopped");
    Ok(())
}

/// How often long work between two reads of the replication connection answers the server.
const BUSY_REPLY_EVERY: Duration = Duration::from_secs(1);

/// The replication loop proper: returns the confirmed LSN at an orderly stop.
async fn replicate(
    st: &mut Streamer,
    src: &crate::config::SourceConfig,
    repl: &Arc<tokio::sync::Mutex<ReplicationConn>>,
    received: &AtomicU64,
    start_lsn: u64,
    mut shutdown: watch::Receiver<bool>,
) -> Result<u64, StreamError> {
    let mut spool = Spool::new(src.spool_dir.clone(), src.spool_memory_bytes);
    let mut in_stream: Option<u32> = None;
    let mut progress = Progress::starting_at(start_lsn);
    let mut status = tokio::time::interval(Duration::from_secs(src.status_interval_secs.max(1)));
    let hb_secs = if src.heartbeat_interval_secs == 0 {
        3600 * 24 * 365
    } else {
        src.heartbeat_interval_secs
    };
    let mut heartbeat = tokio::time::interval(Duration::from_secs(hb_secs));
    heartbeat.tick().await;
    let mut queue_timer = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));

    loop {
        if let Some(e) = st.publisher.failure() {
            return Err(e.into());
        }
        // What the last step published goes out now, together (many events per message).
        let t = std::time::Instant::now();
        st.publisher.flush().await?;
        st.clock.add(PUBLISH, t);
        let mut reply = false;
        // Decoded transactions wait in the pipeline's queue until nothing more comes for a
        // moment (or a batch is full): many small transactions share one vault round trip.
        // One timer, moved when the deadline moves (not a new one per WAL message).
        let queue_due = st.queue_deadline();
        if let Some(due) = queue_due
            && queue_timer.deadline() != due
        {
            queue_timer.as_mut().reset(due);
        }
        let step: Result<(), StreamError> = async {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = &mut queue_timer, if queue_due.is_some() => {
                    st.flush_rows().await?;
                }
                _ = status.tick() => { reply = true; }
                _ = heartbeat.tick(), if src.heartbeat_interval_secs > 0 => {
                    if let Err(e) = st.catalog
                        .execute("SELECT pg_catalog.pg_logical_emit_message(true, $1, '')", &[&HEARTBEAT_PREFIX])
                        .await {
                        tracing::warn!(error = %crate::pg::errors::describe(&e), "heartbeat message failed");
                    }
                }
                data = async { repl.lock().await.recv_copy().await } => {
                    let data = data?;
                    let t = std::time::Instant::now();
                    let decoded = pgoutput::decode_replication(&data)?;
                    st.clock.add(DECODE, t);
                    match decoded {
                        ReplicationMessage::Keepalive { wal_end, reply_requested, .. } => {
                            progress.on_keepalive(wal_end);
                            reply = reply_requested;
                        }
                        ReplicationMessage::XLogData { wal_start, data, .. } => {
                            progress.on_xlog(wal_start);
                            // Some messages (a Relation sent ahead of a change) carry no position:
                            // the last one seen stands (a DDL's own message comes before them).
                            if wal_start != 0 {
                                st.position = Some(wal_start);
                            }
                            received.store(progress.received, Ordering::Relaxed);
                            if let Some(top) = in_stream {
                                let msg = pgoutput::decode_logical(data, true)?;
                                match msg {
                                    LogicalMessage::StreamStop => in_stream = None,
                                    m => {
                                        let sub = m.stream_xid().unwrap_or(top);
                                        spool.push(top, sub, data)?;
                                    }
                                }
                            } else {
                                let t = std::time::Instant::now();
                                let msg = pgoutput::decode_logical(data, false)?;
                                st.clock.add(DECODE, t);
                                match msg {
                                    LogicalMessage::Begin { final_lsn, commit_time_us, xid } => {
                                        st.begin(final_lsn, commit_time_us, xid).await?;
                                    }
                                    LogicalMessage::Commit { commit_lsn, end_lsn, commit_time_us, .. } => {
                                        st.commit(commit_lsn, end_lsn, commit_time_us).await?;
                                    }
                                    LogicalMessage::StreamStart { xid, .. } => in_stream = Some(xid),
                                    LogicalMessage::StreamStop => {}
                                    LogicalMessage::StreamAbort { xid, subxid } => spool.abort(xid, subxid),
                                    LogicalMessage::StreamCommit { xid, commit_lsn, end_lsn, commit_time_us, .. } => {
                                        let mut reader = spool.take(xid)?;
                                        st.begin(commit_lsn, commit_time_us, xid).await?;
                                        // Publishing a large spooled transaction takes a while:
                                        // the server hears from us every second meanwhile (a
                                        // short wal_sender_timeout would drop the connection,
                                        // and the restart would decode it again, forever).
                                        let mut last_reply = std::time::Instant::now();
                                        while let Some(raw) = reader.next_message()? {
                                            let t = std::time::Instant::now();
                                            let m = pgoutput::decode_logical(&raw, true)?;
                                            st.clock.add(DECODE, t);
                                            st.change(m, commit_lsn).await?;
                                            if last_reply.elapsed() >= BUSY_REPLY_EVERY {
                                                last_reply = std::time::Instant::now();
                                                let acked = st.confirmable(st.publisher.acked_lsn());
                                                st.keepalive.keep_alive(acked).await?;
                                            }
                                        }
                                        st.commit(commit_lsn, end_lsn, commit_time_us).await?;
                                    }
                                    m => st.change(m, wal_start).await?,
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        match step {
            Ok(()) => {}
            Err(StreamError::StoppedWhileHeld) => break,
            Err(e) => return Err(e),
        }
        if *shutdown.borrow() {
            // What is decoded goes out before the stop (a hold here just stops).
            match st.flush_rows().await {
                Ok(()) | Err(StreamError::StoppedWhileHeld) => {}
                Err(e) => return Err(e),
            }
            break;
        }
        if reply {
            match st.reload_registry().await {
                Ok(()) => {}
                Err(StreamError::StoppedWhileHeld) => break,
                Err(e) => return Err(e),
            }
            st.observe_slot().await;
            st.backfill_housekeeping().await?;
            st.clock.report();
            let (write, flushed) = progress.status(Activity {
                acked: st.publisher.acked_lsn(),
                inflight: st.publisher.inflight(),
                txn_open: st.txn.is_some() || in_stream.is_some() || st.has_queued(),
            });
            // A running backfill holds the confirmed position at its last acknowledged chunk.
            let flushed = st.confirmable(flushed);
            repl.lock()
                .await
                .send_copy(&status_update(write, flushed))
                .await?;
            metrics::gauge!(crate::metrics::CONFIRMED_LSN).set(flushed as f64);
            metrics::gauge!(crate::metrics::REPLICATION_LAG_BYTES).set(progress.lag_bytes() as f64);
            metrics::gauge!(crate::metrics::SPOOL_BYTES).set(spool.memory_bytes() as f64);
        }
    }
    Ok(progress.confirmed)
}
