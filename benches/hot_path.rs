//! Criterion benches of the per-row hot path: tokenization per transform and pgoutput decoding.
//! Report the figures in issue notes; tests never assert timings.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use veil::catalog::TypeClass;
use veil::registry::Rule;
use veil::tokenize::{MasterKey, RuleKey, apply};

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
    g.bench_function("text name (Latin)", |b| {
        b.iter(|| black_box(key.text(black_box("García Fernández"))))
    });
    g.bench_function("text name (Japanese)", |b| {
        b.iter(|| black_box(key.text(black_box("山田 太郎"))))
    });
    g.bench_function("ssn-shaped text", |b| {
        b.iter(|| black_box(key.text(black_box("123-45-6789"))))
    });
    g.bench_function("uuid", |b| {
        b.iter(|| black_box(key.uuid(black_box("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))))
    });
    let rule = RuleKey::bind(
        &Rule::Tokenize { domain: "x".into() },
        &TypeClass::Int8,
        &master,
    )
    .unwrap();
    g.bench_function("apply(tokenize, int8 text form)", |b| {
        b.iter(|| black_box(apply(&rule, &TypeClass::Int8, black_box("1234567"))))
    });
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
        b.iter(|| black_box(veil::pgoutput::decode_logical(black_box(&msg), false).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, tokenize, decode);
criterion_main!(benches);
