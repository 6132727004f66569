//! The sink's applier fed envelopes directly, against a real PostgreSQL 15 dev database: the
//! orders of events a restarted stream produces (replays, half transactions), checked one by one.

use veil::devkit::testkit::PgCluster;
use veil::proto::{self, envelope::Event};
use veil::sink::{Applier, Next};

use crate::common::{connect, count};

/// A stream run as the sink sees it: contiguous offsets, one run id, event numbers from 1.
pub struct Feed {
    pub applier: Applier,
    pub offset: i64,
    pub run: u64,
    pub seq: u64,
    pub last_commit: u64,
}

impl Feed {
    pub async fn new(dsn: &str) -> Feed {
        let mut applier = Applier::connect(&veil::config::Dsn(dsn.to_owned()), "t")
            .await
            .unwrap();
        // Dev transactions commit only where a test flushes.
        applier.set_batch_limits(usize::MAX, std::time::Duration::from_secs(3600));
        Feed {
            applier,
            offset: -1,
            run: 1,
            seq: 0,
            last_commit: 0,
        }
    }

    /// A new stream run (a restart): event numbers start again.
    pub fn restart(&mut self) {
        self.run += 1;
        self.seq = 0;
    }

    pub async fn send(&mut self, phase: proto::Phase, event: Event) -> Result<Next, String> {
        self.offset += 1;
        self.seq += 1;
        let env = proto::Envelope {
            epoch: 1,
            source_id: "s".into(),
            last_commit_lsn: self.last_commit,
            run_id: self.run,
            seq: self.seq,
            phase: phase as i32,
            event: Some(event),
            ..Default::default()
        };
        self.applier
            .apply(self.offset, env)
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn stream(&mut self, event: Event) -> Result<Next, String> {
        self.send(proto::Phase::Stream, event).await
    }

    pub async fn snapshot_of(&mut self, schemas: &[proto::TableSchema]) {
        self.send(
            proto::Phase::Snapshot,
            Event::SnapshotBegin(proto::SnapshotBegin::default()),
        )
        .await
        .unwrap();
        for s in schemas {
            self.send(proto::Phase::Snapshot, Event::Schema(s.clone()))
                .await
                .unwrap();
        }
        self.send(
            proto::Phase::Snapshot,
            Event::SnapshotEnd(proto::SnapshotEnd::default()),
        )
        .await
        .unwrap();
        self.applier.flush().await.unwrap();
    }

    pub async fn begin(&mut self, commit_lsn: u64) -> Result<(), String> {
        self.stream(Event::Begin(proto::Begin {
            commit_lsn,
            ..Default::default()
        }))
        .await?;
        Ok(())
    }

    pub async fn commit(&mut self, commit_lsn: u64) -> Result<(), String> {
        self.stream(Event::Commit(proto::Commit {
            commit_lsn,
            end_lsn: commit_lsn + 1,
            ..Default::default()
        }))
        .await?;
        self.last_commit = commit_lsn;
        Ok(())
    }

    pub async fn insert(&mut self, table: &str, values: &[&str]) -> Result<Next, String> {
        self.stream(Event::Row(proto::RowChange {
            table: table.into(),
            op: proto::Op::Insert as i32,
            new_values: values.iter().map(|v| text(v)).collect(),
            ..Default::default()
        }))
        .await
    }

    pub async fn start(&mut self, resume_lsn: u64) {
        self.stream(Event::StreamStart(proto::StreamStart {
            resume_lsn,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
}

pub fn text(v: &str) -> proto::Value {
    proto::Value {
        kind: Some(proto::value::Kind::Text(v.into())),
    }
}

pub fn column(name: &str, type_name: &str) -> proto::Column {
    proto::Column {
        name: name.into(),
        type_name: type_name.into(),
        rule: "keep".into(),
        ..Default::default()
    }
}

pub fn table(name: &str, columns: Vec<proto::Column>) -> proto::TableSchema {
    proto::TableSchema {
        schema: "public".into(),
        name: name.into(),
        primary_key: vec![columns[0].name.clone()],
        columns,
        replica_identity: "d".into(),
        ..Default::default()
    }
}

/// Issue 13 item 8: a restarted stream replays transactions the sink applied, with the schema
/// events they carried. Applying a replayed schema from before an `ADD COLUMN` dropped the column
/// in dev (and the next schema added it back empty): its values were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_schema_events_are_skipped_like_their_rows() {
    let dev = PgCluster::start().unwrap();
    dev.create_db("dev").unwrap();
    let dsn = dev.dsn("dev");
    let before = table("t", vec![column("id", "integer")]);
    let after = table("t", vec![column("id", "integer"), column("note", "text")]);

    let mut f = Feed::new(&dsn).await;
    f.snapshot_of(std::slice::from_ref(&before)).await;
    f.start(0).await;
    // T1 under the old shape, T2 adds the column and fills it.
    f.begin(100).await.unwrap();
    f.stream(Event::Schema(before.clone())).await.unwrap();
    f.insert("public.t", &["1"]).await.unwrap();
    f.commit(100).await.unwrap();
    f.begin(200).await.unwrap();
    f.stream(Event::Schema(after.clone())).await.unwrap();
    f.insert("public.t", &["2", "kept"]).await.unwrap();
    f.commit(200).await.unwrap();
    f.applier.flush().await.unwrap();

    // The stream restarts from before T1 and replays both, then a new T3 without a schema
    // event (the stream published it in the replay).
    f.restart();
    f.start(50).await;
    f.begin(100).await.unwrap();
    f.stream(Event::Schema(before.clone())).await.unwrap();
    f.insert("public.t", &["1"]).await.unwrap();
    f.commit(100).await.unwrap();
    f.applier.flush().await.unwrap();
    // The sink may stop between the two replayed transactions: what it deferred survives.
    drop(f.applier);
    f.applier = Applier::connect(&veil::config::Dsn(dsn.clone()), "t")
        .await
        .unwrap();
    f.begin(200).await.unwrap();
    f.stream(Event::Schema(after.clone())).await.unwrap();
    f.insert("public.t", &["2", "kept"]).await.unwrap();
    f.commit(200).await.unwrap();
    f.begin(300).await.unwrap();
    f.insert("public.t", &["3", "new"]).await.unwrap();
    f.commit(300).await.unwrap();
    f.applier.flush().await.unwrap();

    let c = connect(&dsn).await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM t WHERE id = 2 AND note = 'kept'").await,
        1,
        "the value written before the restart survives the replay"
    );
    assert_eq!(count(&c, "SELECT count(*) FROM t").await, 3);
    assert_eq!(
        count(&c, "SELECT count(*) FROM veil_sink.deferred_schemas").await,
        0
    );

    // A replay whose last schema differs from dev's (the registry changed while the stream was
    // down: the column is now blocked) is applied before the next applied transaction.
    f.restart();
    f.start(250).await;
    f.begin(300).await.unwrap();
    f.stream(Event::Schema(before.clone())).await.unwrap();
    f.insert("public.t", &["3"]).await.unwrap();
    f.commit(300).await.unwrap();
    f.begin(400).await.unwrap();
    f.insert("public.t", &["4"]).await.unwrap();
    f.commit(400).await.unwrap();
    f.applier.flush().await.unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'note'"
        )
        .await,
        0
    );
    assert_eq!(count(&c, "SELECT count(*) FROM t").await, 4);
}

/// Issue 13 item 9: a half transaction rolled back (the stream restarted inside it) while
/// earlier whole transactions were still queued: an earlier transaction's error was swallowed
/// with the half one's, its savepoint rolled back, and the checkpoint moved past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_a_discarded_half_transaction_still_stops_the_sink() {
    let dev = PgCluster::start().unwrap();
    dev.create_db("dev").unwrap();
    let dsn = dev.dsn("dev");
    let mut f = Feed::new(&dsn).await;
    f.snapshot_of(&[table("t", vec![column("id", "integer")])])
        .await;
    // Dev refuses id 13 (a constraint someone added in dev): T1 fails when it is sent.
    let c = connect(&dsn).await;
    c.batch_execute("ALTER TABLE t ADD CONSTRAINT no_thirteen CHECK (id <> 13)")
        .await
        .unwrap();
    f.start(0).await;
    f.begin(100).await.unwrap();
    f.insert("public.t", &["13"]).await.unwrap();
    f.commit(100).await.unwrap();
    f.begin(200).await.unwrap();
    f.insert("public.t", &["14"]).await.unwrap();
    // The stream restarts inside T2: the half transaction is discarded, T1's error is not.
    f.restart();
    f.offset += 1;
    f.seq += 1;
    let env = proto::Envelope {
        epoch: 1,
        source_id: "s".into(),
        run_id: f.run,
        seq: f.seq,
        phase: proto::Phase::Stream as i32,
        event: Some(Event::StreamStart(proto::StreamStart::default())),
        ..Default::default()
    };
    let r = f.applier.apply(f.offset, env).await;
    let err = r.expect_err("T1 failed in dev; the sink must stop, not record it applied");
    let msg = err.to_string();
    assert!(msg.contains("public.t"), "{msg}");
    assert!(!msg.contains("13"), "no value in the error: {msg}");
    // Nothing was committed past T1.
    drop(f);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM veil_sink.checkpoint WHERE last_commit_lsn >= 100"
        )
        .await,
        0
    );
}

/// Issue 13 item 3, the fallback: a row carries an enum label dev never saw (its enum event was
/// not published, e.g. the stream met the `ALTER TYPE` before any row of the table in its run).
/// The sink sets the transaction aside, commits what precedes, adds the label in a transaction
/// of its own, and reads the transaction again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_an_unseen_enum_label_adds_it_and_reads_again() {
    let dev = PgCluster::start().unwrap();
    dev.create_db("dev").unwrap();
    let dsn = dev.dsn("dev");
    let mut t = table("e", vec![column("id", "integer"), column("m", "mood")]);
    t.enums = vec![proto::EnumType {
        name: "mood".into(),
        labels: vec!["low".into(), "high".into()],
    }];
    let mut f = Feed::new(&dsn).await;
    f.snapshot_of(std::slice::from_ref(&t)).await;
    f.start(0).await;
    f.begin(100).await.unwrap();
    f.insert("public.e", &["1", "low"]).await.unwrap();
    f.commit(100).await.unwrap();
    let begin = f.offset + 1;
    f.begin(200).await.unwrap();
    f.insert("public.e", &["2", "high"]).await.unwrap();
    let next = f.insert("public.e", &["3", "new"]).await.unwrap();
    assert_eq!(next, Next::ReadFrom(begin));
    // The consumer reads again from the Begin: same offsets, same event numbers.
    f.offset = begin - 1;
    f.seq -= 3;
    f.begin(200).await.unwrap();
    f.insert("public.e", &["2", "high"]).await.unwrap();
    assert_eq!(
        f.insert("public.e", &["3", "new"]).await.unwrap(),
        Next::Continue
    );
    f.commit(200).await.unwrap();
    f.applier.flush().await.unwrap();
    let c = connect(&dsn).await;
    assert_eq!(count(&c, "SELECT count(*) FROM e").await, 3);
    let order: String = c
        .query_one(
            "SELECT string_agg(enumlabel::text, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'mood'::regtype",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(order, "low,high,new");
}

/// Issue 13 item 7, the sink's half: an envelope in fragments is applied at its last piece; a
/// sink stopped between pieces reads them again from the first (nothing of a half-read event is
/// in the checkpoint); pieces a stream restart left incomplete are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_are_joined_and_a_restart_between_pieces_reads_them_again() {
    use prost::Message as _;
    let dev = PgCluster::start().unwrap();
    dev.create_db("dev").unwrap();
    let dsn = dev.dsn("dev");
    let mut f = Feed::new(&dsn).await;
    f.snapshot_of(&[table(
        "t",
        vec![column("id", "integer"), column("v", "text")],
    )])
    .await;
    f.start(0).await;
    f.begin(100).await.unwrap();
    let big = "ü".repeat(40_000);
    // The stream's half: the envelope as the publisher cuts it.
    let pieces = |f: &mut Feed, id: &str| {
        f.seq += 1;
        let env = proto::Envelope {
            epoch: 1,
            source_id: "s".into(),
            run_id: f.run,
            seq: f.seq,
            phase: proto::Phase::Stream as i32,
            event: Some(Event::Row(proto::RowChange {
                table: "public.t".into(),
                op: proto::Op::Insert as i32,
                new_values: vec![text(id), text(&big)],
                ..Default::default()
            })),
            ..Default::default()
        };
        let payload = env.encode_to_vec();
        veil::kafka::producer::fragments(&env, &payload, 8192)
            .into_iter()
            .map(|p| proto::Envelope::decode(p.as_slice()).unwrap())
            .collect::<Vec<_>>()
    };
    let first = pieces(&mut f, "1");
    assert!(first.len() > 5);
    let start = f.offset + 1;
    for (i, p) in first.iter().enumerate() {
        assert_eq!(
            f.applier.apply(start + i as i64, p.clone()).await.unwrap(),
            Next::Continue
        );
    }
    f.offset = start + first.len() as i64 - 1;
    f.commit(100).await.unwrap();
    f.applier.flush().await.unwrap();

    // A second big row; the sink stops after two pieces (it commits what it has).
    f.begin(200).await.unwrap();
    f.insert("public.t", &["2", "small"]).await.unwrap();
    f.applier.flush().await.unwrap();
    let second = pieces(&mut f, "3");
    let start = f.offset + 1;
    for (i, p) in second.iter().take(2).enumerate() {
        f.applier.apply(start + i as i64, p.clone()).await.unwrap();
    }
    f.applier.flush().await.unwrap();
    drop(f.applier);
    f.applier = Applier::connect(&veil::config::Dsn(dsn.clone()), "t")
        .await
        .unwrap();
    // It resumes at its checkpoint: the transaction's Begin (the transaction was open).
    let resume = f.applier.next_offset();
    assert!(
        resume < start,
        "the checkpoint covers no piece of the half-read event"
    );
    // Pieces of the second event alone (as if the consumer re-read them): the Begin and the
    // small row come first, from the topic.
    f.offset = resume - 1;
    f.seq -= 3;
    f.begin(200).await.unwrap();
    f.insert("public.t", &["2", "small"]).await.unwrap();
    f.seq += 1;
    for (i, p) in second.iter().enumerate() {
        f.applier.apply(start + i as i64, p.clone()).await.unwrap();
    }
    f.offset = start + second.len() as i64 - 1;
    f.commit(200).await.unwrap();
    f.applier.flush().await.unwrap();

    let c = connect(&dsn).await;
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM t WHERE id IN (1, 3) AND length(v) = 40000"
        )
        .await,
        2
    );
    assert_eq!(count(&c, "SELECT count(*) FROM t").await, 3);
}

/// Issue 14: the sink merges a queue's row changes per table into multi-row statements (a key
/// updated twice keeps the last values, a key that moves is applied alone, a TOAST-unchanged
/// update has a shape of its own). A long seeded mix of small transactions over two tables, few
/// keys (so keys repeat inside one batch), applied through the sink and through a model: dev
/// equals the model row for row, and the changes of rows dev does not hold are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_row_statements_apply_like_one_at_a_time() {
    use std::collections::BTreeMap;
    let pg = PgCluster::start().unwrap();
    pg.create_db("dev").unwrap();
    let dsn = pg.dsn("dev");
    let mut feed = Feed::new(&dsn).await;
    let a = table(
        "a",
        vec![
            column("id", "integer"),
            column("name", "text"),
            column("n", "integer"),
        ],
    );
    let b = table(
        "b",
        vec![column("id", "bigint"), column("v", "character varying(10)")],
    );
    feed.snapshot_of(&[a, b]).await;
    let null = proto::Value {
        kind: Some(proto::value::Kind::Null(true)),
    };
    let unchanged = proto::Value {
        kind: Some(proto::value::Kind::Unchanged(true)),
    };
    // The model: table → id → values (None = NULL).
    let mut model: BTreeMap<&str, BTreeMap<i64, Vec<Option<String>>>> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = ["山田 太郎", "Zoë 🩺", "O'Brien", "", "x\ty\\z"];
    let mut missing = 0u64;
    let mut lsn = 100u64;
    // First a long run of inserts per table (sent as COPY), with what COPY's text format
    // escapes: tabs, newlines, carriage returns, backslashes, an end-of-data marker, NULLs.
    let poison = ["\\.", "a\nb\r\nc", "tab\there", "\\N", "🩺\\\\x", "山田"];
    lsn += 10;
    feed.begin(lsn).await.unwrap();
    for id in 1000..1300i64 {
        let v = vec![
            Some(id.to_string()),
            (id % 7 != 0).then(|| poison[id as usize % poison.len()].to_owned()),
            Some((id * 3).to_string()),
        ];
        let values = v
            .iter()
            .map(|x| x.as_deref().map(text).unwrap_or(null.clone()))
            .collect();
        model.entry("a").or_default().insert(id, v);
        feed.stream(Event::Row(proto::RowChange {
            table: "public.a".into(),
            op: proto::Op::Insert as i32,
            new_values: values,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    for id in 100..200i64 {
        let v = vec![Some(id.to_string()), Some(format!("\\\t{id}"))];
        let values = v.iter().map(|x| text(x.as_deref().unwrap())).collect();
        model.entry("b").or_default().insert(id, v);
        feed.stream(Event::Row(proto::RowChange {
            table: "public.b".into(),
            op: proto::Op::Insert as i32,
            new_values: values,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    feed.commit(lsn).await.unwrap();
    for _txn in 0..1500 {
        lsn += 10;
        feed.begin(lsn).await.unwrap();
        for _ in 0..1 + rnd(4) {
            let t = if rnd(2) == 0 { "a" } else { "b" };
            let rows = model.entry(t).or_default();
            // Few keys, mostly updates: a key often comes twice in one multi-row statement.
            let id = rnd(if t == "a" { 40 } else { 8 }) as i64;
            let vals = |id: i64, r: &mut dyn FnMut(u64) -> u64| -> Vec<Option<String>> {
                if t == "a" {
                    vec![
                        Some(id.to_string()),
                        (r(6) != 0).then(|| names[r(5) as usize].to_owned()),
                        Some(r(1000).to_string()),
                    ]
                } else {
                    vec![Some(id.to_string()), Some(format!("v{}", r(99999)))]
                }
            };
            let pv = |v: &[Option<String>]| -> Vec<proto::Value> {
                v.iter()
                    .map(|x| x.as_deref().map(text).unwrap_or(null.clone()))
                    .collect()
            };
            let (op, new_values, old_values) = if !rows.contains_key(&id) && rnd(8) != 0 {
                let v = vals(id, &mut rnd);
                rows.insert(id, v.clone());
                (proto::Op::Insert, pv(&v), vec![])
            } else {
                match rnd(12) {
                    // Delete (of a row dev may not hold).
                    0 => {
                        if rows.remove(&id).is_none() {
                            missing += 1;
                        }
                        let mut old = vec![null.clone(); if t == "a" { 3 } else { 2 }];
                        old[0] = text(&id.to_string());
                        (proto::Op::Delete, vec![], old)
                    }
                    // The key moves to a free one.
                    1 if rows.contains_key(&id) => {
                        let to = (40..).find(|k| !rows.contains_key(k)).unwrap();
                        let mut v = rows.remove(&id).unwrap();
                        v[0] = Some(to.to_string());
                        rows.insert(to, v.clone());
                        let mut old = vec![null.clone(); v.len()];
                        old[0] = text(&id.to_string());
                        (proto::Op::Update, pv(&v), old)
                    }
                    // A backfilled row: inserted, or replacing dev's (merged with its
                    // neighbours; a key met twice keeps the last values).
                    3 | 4 => {
                        let v = vals(id, &mut rnd);
                        rows.insert(id, v.clone());
                        (proto::Op::Upsert, pv(&v), vec![])
                    }
                    // A TOAST-unchanged column is kept.
                    2 if t == "a" && rows.contains_key(&id) => {
                        let v = vals(id, &mut rnd);
                        let row = rows.get_mut(&id).unwrap();
                        row[2] = v[2].clone();
                        let mut nv = pv(&v);
                        nv[1] = unchanged.clone();
                        (proto::Op::Update, nv, vec![])
                    }
                    _ => {
                        let v = vals(id, &mut rnd);
                        match rows.get_mut(&id) {
                            Some(row) => *row = v.clone(),
                            None => missing += 1,
                        }
                        (proto::Op::Update, pv(&v), vec![])
                    }
                }
            };
            feed.stream(Event::Row(proto::RowChange {
                table: format!("public.{t}"),
                op: op as i32,
                new_values,
                old_values,
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        feed.commit(lsn).await.unwrap();
    }
    feed.applier.flush().await.unwrap();
    let dev = connect(&dsn).await;
    for (t, rows) in &model {
        let cols = if *t == "a" {
            "id::text, name, n::text"
        } else {
            "id::text, v"
        };
        let got: Vec<Vec<Option<String>>> = dev
            .query(
                &format!("SELECT {cols} FROM public.{t} AS r ORDER BY r.id"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
            .collect();
        let want: Vec<Vec<Option<String>>> = rows.values().cloned().collect();
        assert_eq!(got, want, "table {t}");
    }
    let counted: u64 = feed.applier.missing.values().map(|m| m.0).sum();
    assert_eq!(counted, missing, "changes of rows dev does not hold");
    assert!(missing > 0 && model["a"].len() > 10 && model["b"].len() > 10);
}

impl Feed {
    /// The envelopes of `events` (numbered on from this run's last) in one Kafka message.
    pub fn batch(&mut self, events: Vec<Event>) -> proto::Envelope {
        let envelopes = events
            .into_iter()
            .map(|event| {
                self.seq += 1;
                if let Event::Commit(c) = &event {
                    self.last_commit = c.commit_lsn;
                }
                proto::Envelope {
                    epoch: 1,
                    source_id: "s".into(),
                    last_commit_lsn: self.last_commit,
                    run_id: self.run,
                    seq: self.seq,
                    phase: proto::Phase::Stream as i32,
                    event: Some(event),
                    ..Default::default()
                }
            })
            .collect();
        proto::Envelope {
            epoch: 1,
            run_id: self.run,
            event: Some(Event::Batch(proto::EventBatch { envelopes })),
            ..Default::default()
        }
    }
}

/// A dev cluster and a feed whose snapshot made `public.t (id integer)`, stream started.
async fn one_table_feed() -> (PgCluster, String, Feed) {
    let pg = PgCluster::start().unwrap();
    pg.create_db("dev").unwrap();
    let dsn = pg.dsn("dev");
    let mut f = Feed::new(&dsn).await;
    f.snapshot_of(&[table("t", vec![column("id", "integer")])])
        .await;
    f.start(0).await;
    (pg, dsn, f)
}

fn row(id: &str) -> Event {
    Event::Row(proto::RowChange {
        table: "public.t".into(),
        op: proto::Op::Insert as i32,
        new_values: vec![text(id)],
        ..Default::default()
    })
}

fn begin(lsn: u64) -> Event {
    Event::Begin(proto::Begin {
        commit_lsn: lsn,
        ..Default::default()
    })
}

fn commit(lsn: u64) -> Event {
    Event::Commit(proto::Commit {
        commit_lsn: lsn,
        end_lsn: lsn + 1,
        ..Default::default()
    })
}

async fn ids_in_t(dev: &tokio_postgres::Client) -> Vec<i32> {
    dev.query("SELECT id FROM public.t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Issue 14, many events per Kafka message: a batch that ends inside an open source transaction
/// (the stream held there) is set aside at that transaction's Begin, in the middle of the
/// batch; the checkpoint then names the offset before the batch, so a sink restarted from it
/// reads the whole message again — the transaction before the Begin is dropped as a duplicate
/// by its event number, the open one is applied once, when its Commit comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applied_in_part_is_read_again_and_applied_once() {
    let (_pg, dsn, mut f) = one_table_feed().await;
    // An empty batch is bad input: refused, naming its offset.
    let empty = proto::Envelope {
        event: Some(Event::Batch(proto::EventBatch { envelopes: vec![] })),
        ..Default::default()
    };
    let err = f.applier.apply(f.offset + 1, empty).await.unwrap_err();
    assert!(err.to_string().contains("empty batch"), "{err}");
    let first = f.batch(vec![
        begin(100),
        row("1"),
        commit(100),
        begin(200),
        row("2"),
    ]);
    let at = f.offset + 1;
    assert_eq!(
        f.applier.apply(at, first.clone()).await.unwrap(),
        Next::Continue
    );
    // The stream holds inside T2: the sink sets it aside and commits T1.
    assert_eq!(f.applier.set_aside_open_txn().await.unwrap(), Some(at));
    f.applier.flush().await.unwrap();
    assert_eq!(f.applier.next_offset(), at, "the batch is read again");
    let dev = connect(&dsn).await;
    assert_eq!(count(&dev, "SELECT count(*) FROM public.t").await, 1);

    // A restarted sink reads from its checkpoint: the same message, then the rest of T2.
    let mut g = Applier::connect(&veil::config::Dsn(dsn.clone()), "t")
        .await
        .unwrap();
    assert_eq!(g.next_offset(), at);
    assert_eq!(g.apply(at, first).await.unwrap(), Next::Continue);
    let rest = f.batch(vec![row("3"), commit(200)]);
    assert_eq!(g.apply(at + 1, rest).await.unwrap(), Next::Continue);
    g.flush().await.unwrap();
    assert_eq!(g.next_offset(), at + 2);
    assert_eq!(ids_in_t(&dev).await, vec![1, 2, 3]);
    assert_eq!(g.last_commit_lsn(), 200);
}

/// Under a steady flow a batch rarely ends on a transaction boundary, so the dev transaction
/// commits at a boundary inside it once due; a sink killed after that reads the batch again
/// from the checkpoint before it: what was committed is dropped as duplicates, the rest is
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_inside_a_batch_then_a_kill_applies_the_rest_once() {
    let (_pg, dsn, mut f) = one_table_feed().await;
    // Commit at every boundary.
    f.applier.set_batch_limits(1, std::time::Duration::ZERO);
    let batch = f.batch(vec![
        begin(100),
        row("1"),
        commit(100),
        begin(200),
        row("2"),
        row("3"),
    ]);
    let at = f.offset + 1;
    f.applier.apply(at, batch.clone()).await.unwrap();
    // T1 is committed in dev with a checkpoint before the batch; T2 is open, uncommitted.
    let dev = connect(&dsn).await;
    assert_eq!(count(&dev, "SELECT count(*) FROM public.t").await, 1);
    assert_eq!(
        count(&dev, "SELECT kafka_offset FROM veil_sink.checkpoint").await,
        at - 1
    );
    // Killed: the open dev transaction is lost. The restarted sink reads the batch again.
    let rest = f.batch(vec![commit(200)]);
    drop(f);
    let mut g = Applier::connect(&veil::config::Dsn(dsn.clone()), "t")
        .await
        .unwrap();
    assert_eq!(g.next_offset(), at);
    g.apply(at, batch).await.unwrap();
    g.apply(at + 1, rest).await.unwrap();
    g.flush().await.unwrap();
    assert_eq!(ids_in_t(&dev).await, vec![1, 2, 3]);
    assert_eq!(
        g.duplicates, 3,
        "T1's three envelopes were dropped as duplicates"
    );
}
