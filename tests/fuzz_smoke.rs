//! The fuzz targets (`src/devkit/fuzz.rs`, run under libFuzzer from `fuzz/`) on stable, in CI:
//! every seed and 20,000 deterministic mutations of the seeds per target. A panic fails the
//! test. The long runs (millions of executions) are `cargo +nightly fuzz run <target>`; see
//! README "Reliability".

use prost::Message as _;
use veil::proto::{self, envelope::Event};

/// Seeds: real captured pgoutput messages, the project's registry files, a full config, COPY
/// lines, and envelopes of every kind (fragments included).
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    match target {
        "pgoutput" => std::fs::read_to_string(root.join("tests/fixtures/pgoutput_v2.hex"))
            .unwrap()
            .lines()
            .map(|l| hex::decode(l).unwrap())
            .collect(),
        "copy_text" => vec![
            b"1\tabc\t\\N\t\\\\x41\\t\\n\xe5\xb1\xb1\n2\t\t{a,\"b c\"}\t\\101".to_vec(),
            b"\\N\\N\t\\\t".to_vec(),
        ],
        "config" => vec![std::fs::read(root.join("fuzz/seeds/config/full.toml")).unwrap()],
        "registry" => std::fs::read_dir(root.join("schema-registry"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect(),
        "envelope" => {
            let env = |seq: u64, event: Event| proto::Envelope {
                run_id: 1,
                seq,
                epoch: 1,
                last_commit_lsn: 100,
                event: Some(event),
                ..Default::default()
            };
            let events = vec![
                env(1, Event::SnapshotBegin(Default::default())),
                env(
                    2,
                    Event::Schema(proto::TableSchema {
                        schema: "public".into(),
                        name: "t".into(),
                        ..Default::default()
                    }),
                ),
                env(
                    3,
                    Event::Begin(proto::Begin {
                        commit_lsn: 200,
                        ..Default::default()
                    }),
                ),
                env(
                    4,
                    Event::Row(proto::RowChange {
                        table: "public.t".into(),
                        new_values: vec![proto::Value {
                            kind: Some(proto::value::Kind::Text("x".repeat(300))),
                        }],
                        ..Default::default()
                    }),
                ),
                env(
                    5,
                    Event::Commit(proto::Commit {
                        commit_lsn: 200,
                        ..Default::default()
                    }),
                ),
            ];
            let mut out = Vec::new();
            let mut one = Vec::new();
            for e in &events {
                let b = e.encode_to_vec();
                one.extend_from_slice(&(b.len() as u16).to_be_bytes());
                one.extend_from_slice(&b);
            }
            out.push(one);
            // The row in fragments.
            let payload = events[3].encode_to_vec();
            let mut frag = Vec::new();
            for p in veil::kafka::producer::fragments(&events[3], &payload, 1124) {
                frag.extend_from_slice(&(p.len() as u16).to_be_bytes());
                frag.extend_from_slice(&p);
            }
            out.push(frag);
            out
        }
        other => panic!("no seeds for {other}"),
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = [0, 0xff, 0x7f, 0x80, b'\\', b'\t', b'"', b'='][rng.below(8)];
            }
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
            3 if !b.is_empty() => {
                let n = rng.below(b.len());
                b.truncate(n);
            }
            4 if !b.is_empty() => {
                let i = rng.below(b.len());
                let j = (i + rng.below(64)).min(b.len());
                let chunk = b[i..j].to_vec();
                let at = rng.below(b.len() + 1);
                b.splice(at..at, chunk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    b.extend_from_slice(&other[i..]);
                }
            }
            _ if b.len() >= 4 => {
                // A length or count field at its extremes.
                let i = rng.below(b.len() - 3);
                let v: [u8; 4] =
                    [[0xff; 4], [0; 4], [0x7f, 0xff, 0xff, 0xff], [0x80, 0, 0, 0]][rng.below(4)];
                b[i..i + 4].copy_from_slice(&v);
            }
            _ => {}
        }
    }
}

#[test]
fn fuzz_targets_survive_their_seeds_and_mutations() {
    const RUNS: usize = 20_000;
    for (name, target) in veil::devkit::fuzz::TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        for s in &seeds {
            target(s);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for _ in 0..RUNS {
            let mut b = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, &seeds, &mut b);
            target(&b);
        }
    }
}

/// Writes the seeds to `fuzz/seeds/<target>/` for libFuzzer (`cargo test --test fuzz_smoke --
/// --ignored`).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (name, _) in veil::devkit::fuzz::TARGETS {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
