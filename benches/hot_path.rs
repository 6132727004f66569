//! Criterion benches of the per-row hot path, one group per stage: pgoutput decoding (decode),
//! tokenization (transform), envelope encoding and batching (publish), message decoding and
//! unbatching (the sink's consume). Report the figures in issue notes; tests never assert
//! timings.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use veil::deid::registry::{Profile, Rule, SurrogateKind};
use veil::deid::scanner::Scanner;
use veil::deid::tokenize::{
    BindCx, Cx, MasterKey, MemoryStore, RuleKey, TokenKind, VaultRule, apply,
};
use veil::pg::catalog::TypeClass;

fn bind(master: &MasterKey, rule: Rule, class: &TypeClass, profile: Profile) -> RuleKey {
    let scanner = Arc::new(Scanner::standard());
    let idx = |_: &str| Some(0usize);
    RuleKey::bind(
        &rule,
        class,
        &BindCx {
            master,
            profile,
            column_index: &idx,
            scanner: &scanner,
            restricted_zip3: &Arc::new(Vec::new()),
        },
    )
    .unwrap()
}

/// Applies `rule` once (allocating on a miss), so the measured loop sees cache hits.
fn run(rule: &RuleKey, class: &TypeClass, v: &str, store: &MemoryStore) -> Option<String> {
    let row = [Some("17")];
    let mut misses = Vec::new();
    let out = apply(
        rule,
        class,
        v,
        &mut Cx {
            store,
            misses: &mut misses,
            row: &row,
        },
    )
    .unwrap();
    if misses.is_empty() {
        return out;
    }
    store.allocate(&misses);
    run(rule, class, v, store)
}

fn tokenize(c: &mut Criterion) {
    let master = MasterKey::new([9; 32]);
    let key = master.domain_key("patient_id");
    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Elements(1));
    g.bench_function("int8 permutation", |b| {
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            black_box(key.permute_int(black_box(i), 63))
        })
    });
    g.bench_function("int4 permutation", |b| {
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            black_box(key.permute_int(black_box(i), 31))
        })
    });
    let int_rule = bind(
        &master,
        Rule::Tokenize { domain: "x".into() },
        &TypeClass::Int8,
        Profile::ExpertDetermination,
    );
    let store = MemoryStore::default();
    g.bench_function("apply tokenize int8 (text form, expert)", |b| {
        b.iter(|| {
            black_box(run(
                &int_rule,
                &TypeClass::Int8,
                black_box("1234567"),
                &store,
            ))
        })
    });
    // Vault-held tokens on the hot path: keyed value hash + cache lookup.
    let text_rule = bind(
        &master,
        Rule::Tokenize {
            domain: "mrn".into(),
        },
        &TypeClass::Text,
        Profile::ExpertDetermination,
    );
    run(&text_rule, &TypeClass::Text, "MRN10000013", &store);
    g.bench_function("apply tokenize text (vault cache hit)", |b| {
        b.iter(|| {
            black_box(run(
                &text_rule,
                &TypeClass::Text,
                black_box("MRN10000013"),
                &store,
            ))
        })
    });
    let shift = bind(
        &master,
        Rule::DateShift {
            domain: "patient_id".into(),
            entity: "id".into(),
            max_days: 180,
        },
        &TypeClass::Timestamptz,
        Profile::ExpertDetermination,
    );
    g.bench_function("apply date_shift timestamptz", |b| {
        b.iter(|| {
            black_box(run(
                &shift,
                &TypeClass::Timestamptz,
                black_box("2024-03-11 10:15:00+00"),
                &store,
            ))
        })
    });
    let redact = bind(
        &master,
        Rule::Redact { whole: false },
        &TypeClass::Text,
        Profile::SafeHarbor,
    );
    g.bench_function("apply redact (80-char note)", |b| {
        b.iter(|| {
            black_box(run(
                &redact,
                &TypeClass::Text,
                black_box(
                    "seen for follow-up; patient García reports improvement, call (617) 555-0123",
                ),
                &store,
            ))
        })
    });
    g.finish();

    // Candidate generation: what a first sighting costs before the vault round trip.
    let mut g = c.benchmark_group("token candidates");
    g.throughput(Throughput::Elements(1));
    let kinds: [(&str, TokenKind, &str); 8] = [
        ("text MRN (keyed)", TokenKind::Text, "MRN10000013"),
        ("ssn (keyed)", TokenKind::Ssn, "123-45-6789"),
        (
            "email (keyed)",
            TokenKind::Email,
            "patient17.42@mail.example",
        ),
        (
            "surrogate name Latin",
            TokenKind::Surrogate(SurrogateKind::Name),
            "Mary García Fernández",
        ),
        (
            "surrogate name Japanese",
            TokenKind::Surrogate(SurrogateKind::Name),
            "山田 太郎",
        ),
        (
            "surrogate street",
            TokenKind::Surrogate(SurrogateKind::Street),
            "1234 Maple St",
        ),
        (
            "uuid (keyed)",
            TokenKind::Uuid,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        ("text (random, Safe Harbor)", TokenKind::Text, "MRN10000013"),
    ];
    for (name, kind, value) in kinds {
        let rule = VaultRule {
            domain: "d".into(),
            kind,
            key: master.domain_key("d"),
            random: name.contains("random"),
        };
        g.bench_function(name, |b| {
            b.iter(|| black_box(rule.candidate(black_box(value), 0)))
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    // An Insert of 6 columns, as pgoutput sends it.
    let mut msg = vec![b'I'];
    msg.extend_from_slice(&16384u32.to_be_bytes());
    msg.push(b'N');
    msg.extend_from_slice(&6u16.to_be_bytes());
    for v in [
        "12345",
        "MRN10000013",
        "123-45-6789",
        "山田",
        "太郎",
        "1961-07-04",
    ] {
        msg.push(b't');
        msg.extend_from_slice(&(v.len() as i32).to_be_bytes());
        msg.extend_from_slice(v.as_bytes());
    }
    let mut g = c.benchmark_group("pgoutput");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode insert (6 columns)", |b| {
        b.iter(|| {
            black_box(veil::source::pgoutput::decode_logical(black_box(&msg), false).unwrap())
        })
    });
    g.finish();
}

/// A pgbench-like row change as the stream publishes it (tokens in place of ids).
fn row_envelope(seq: u64) -> veil::proto::Envelope {
    use veil::proto::{self, envelope::Event, value::Kind};
    let text = |s: String| proto::Value {
        kind: Some(Kind::Text(s)),
    };
    proto::Envelope {
        epoch: 1,
        source_id: "7301234567890123456/clinic".into(),
        last_commit_lsn: 0x1_6B37_4D48 + seq * 200,
        registry_version: "3f9c2a7d41e0".into(),
        key_id: "k-2f1e".into(),
        phase: proto::Phase::Stream as i32,
        run_id: 0x5eed_cafe,
        seq,
        event: Some(Event::Row(proto::RowChange {
            table: "public.pgbench_history".into(),
            op: proto::Op::Insert as i32,
            new_values: vec![
                text(format!("{}", 8_812_345_678_901 + seq)),
                text("31".into()),
                text("7".into()),
                text(format!("{}", 40_000 + seq % 997)),
                text(format!("{}", seq as i64 % 5000 - 2500)),
                text("2026-01-01 00:00:00".into()),
                proto::Value {
                    kind: Some(Kind::Null(true)),
                },
            ],
            ..Default::default()
        })),
    }
}

fn publish_and_consume(c: &mut Criterion) {
    use prost::Message as _;
    let envs: Vec<veil::proto::Envelope> = (1..=1000).map(row_envelope).collect();
    let header = veil::proto::Envelope {
        epoch: 1,
        run_id: 0x5eed_cafe,
        source_id: envs[0].source_id.clone(),
        ..Default::default()
    };
    let mut g = c.benchmark_group("messages");
    g.throughput(Throughput::Elements(envs.len() as u64));
    g.bench_function("encode 1000 row envelopes into one batch message", |b| {
        b.iter(|| {
            let items: Vec<Vec<u8>> = envs.iter().map(|e| e.encode_to_vec()).collect();
            black_box(veil::kafka::producer::encode_batch(&header, &items))
        })
    });
    g.bench_function("encode 1000 row envelopes, one message each", |b| {
        b.iter(|| {
            let items: Vec<Vec<u8>> = envs.iter().map(|e| e.encode_to_vec()).collect();
            black_box(items)
        })
    });
    let items: Vec<Vec<u8>> = envs.iter().map(|e| e.encode_to_vec()).collect();
    let message = veil::kafka::producer::encode_batch(&header, &items);
    g.bench_function("decode and unbatch a 1000-envelope message", |b| {
        b.iter(|| {
            let outer = veil::proto::Envelope::decode(black_box(message.as_slice())).unwrap();
            black_box(veil::proto::unbatch(outer))
        })
    });
    g.finish();
}

criterion_group!(benches, tokenize, decode, publish_and_consume);
criterion_main!(benches);
