//! The first run on schemas nobody here designed: a seeded generator makes a few hundred small
//! schemas the way real systems are shaped — terse and abbreviated column names, composite keys
//! mixing date, timestamp, numeric, text and uuid parts with foreign keys naming them, the same
//! logical id stored as `bigint` in one table and `varchar` or `numeric` in another, dates kept as
//! `yyyymmdd` integers, empty tables and empty columns, partitioned tables, JSON documents — and
//! runs the first run's three steps on them: `veil registry propose`, `veil registry approve
//! --all-proposed`, and the gate's plan of every table.
//!
//! Invariant: what `propose` proposes, `approve --all-proposed` accepts (0 refusals) and the
//! stream streams (0 holds: every table plans). Printed: schemas, tables, columns, how many were
//! proposed blocked and how many proposals the set check had to repair.
//!
//! `VEIL_MUTATION_SCHEMAS` (default 200) and `VEIL_MUTATION_SEED` (default 26) set the run.

use std::fmt::Write as _;
use veil::config::Config;
use veil::devkit::testkit::PgCluster;

/// A small deterministic generator (xorshift64*), so a failing seed can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A key part: its SQL type and a value for row `i` of entity `e`.
#[derive(Clone, Copy, Debug)]
enum Part {
    BigInt,
    Date,
    Timestamp,
    Numeric,
    Text,
    Uuid,
}

impl Part {
    fn sql(self) -> &'static str {
        match self {
            Part::BigInt => "bigint",
            Part::Date => "date",
            Part::Timestamp => "timestamp",
            Part::Numeric => "numeric(12,0)",
            Part::Text => "varchar(24)",
            Part::Uuid => "uuid",
        }
    }
    /// The SQL expression for generated row `g` (a `generate_series` value).
    fn value(self, salt: u64) -> String {
        match self {
            Part::BigInt => format!("(g * 7919 + {salt})"),
            Part::Date => format!("(date '2019-01-01' + ((g * 37 + {salt}) % 1800)::int)"),
            Part::Timestamp => {
                format!(
                    "(timestamp '2019-01-01' + ((g * 3701 + {salt}) % 9000000) * interval '17 seconds')"
                )
            }
            Part::Numeric => format!("(100000000 + g * 31 + {salt})::numeric(12,0)"),
            Part::Text => format!("('K' || lpad((g * 13 + {salt})::text, 8, '0'))"),
            Part::Uuid => format!("md5((g + {salt})::text)::uuid"),
        }
    }
}

const ID_NAMES: &[&str] = &[
    "clm_id",
    "claim_id",
    "CLM_ID",
    "encntr_id",
    "visit_occurrence_id",
    "doc_id",
    "acct_num",
    "order_no",
];
const DATE_NAMES: &[&str] = &["svc_dt", "clm_from_dt", "SRVC_DT", "obs_date", "adm_dt"];
const TS_NAMES: &[&str] = &["evt_ts", "charttime", "recorded_at", "STRT_TS"];
const LINE_NAMES: &[&str] = &["line_num", "ln_no", "seq", "CLM_LINE_NUM", "line_nbr"];
const CODE_NAMES: &[&str] = &["typ_cd", "rev_cd", "src_cd", "status_code"];

/// One generated schema's DDL and data.
fn schema(n: usize, rng: &mut Rng) -> String {
    let s = format!("m{n:03}");
    let mut sql = format!("CREATE SCHEMA {s};\n");
    let parts = [
        Part::BigInt,
        Part::Date,
        Part::Timestamp,
        Part::Numeric,
        Part::Text,
        Part::Uuid,
    ];
    let id = *rng.pick(ID_NAMES);
    let id_part = *rng.pick(&[Part::BigInt, Part::Text, Part::Numeric, Part::Uuid]);
    let second = *rng.pick(&parts);
    let second_name = match second {
        Part::Date => *rng.pick(DATE_NAMES),
        Part::Timestamp => *rng.pick(TS_NAMES),
        _ => *rng.pick(&["alt_key", "src_sys_id", "ver_key", "BATCH_KEY"]),
    };
    let rows = *rng.pick(&[0u64, 1, 10, 40, 60]);
    let empty_col = rng.chance(30);
    let partitioned = rng.chance(15);
    // The parent: a composite primary key (an id and a second part), a line-like ordinal, a
    // code, an amount, maybe a yyyymmdd integer date, maybe an empty column.
    let _ = writeln!(
        sql,
        "CREATE TABLE {s}.hdr ({id} {}, {second_name} {}, {ln} int, {cd} varchar(4), pmt_amt_ip numeric(10,2), \
         dob_yyyymmdd int, addr_ln_2 varchar(40), notes text, PRIMARY KEY ({id}, {second_name}){part});",
        id_part.sql(),
        second.sql(),
        ln = rng.pick(LINE_NAMES),
        cd = rng.pick(CODE_NAMES),
        part = if partitioned {
            format!(") PARTITION BY HASH ({id}")
        } else {
            String::new()
        },
    );
    if partitioned {
        let _ = writeln!(
            sql,
            "CREATE TABLE {s}.hdr_p0 PARTITION OF {s}.hdr FOR VALUES WITH (MODULUS 2, REMAINDER 0);\n\
             CREATE TABLE {s}.hdr_p1 PARTITION OF {s}.hdr FOR VALUES WITH (MODULUS 2, REMAINDER 1);"
        );
    }
    if rows > 0 {
        let _ = writeln!(
            sql,
            "INSERT INTO {s}.hdr SELECT {}, {}, (g % 9) + 1, 'T' || (g % 4), round((g * 13.37)::numeric % 5000, 2), \
             to_char(date '1940-01-01' + (g * 211 % 25000), 'YYYYMMDD')::int, {}, NULL \
             FROM generate_series(1, {rows}) g;",
            id_part.value(n as u64),
            second.value(n as u64 * 3),
            if empty_col {
                "NULL"
            } else {
                "CASE WHEN g % 17 = 0 THEN 'Apt 4' END"
            },
        );
    }
    // The child: lines of the parent, naming the parent's whole key (the second part under
    // another name), with its own line number in the key.
    let child_second = match second {
        Part::Date => *rng.pick(DATE_NAMES),
        Part::Timestamp => *rng.pick(TS_NAMES),
        _ => second_name,
    };
    let child_id = if rng.chance(50) { id } else { "hdr_ref" };
    let child_second = if child_second == child_id {
        "hdr_second"
    } else {
        child_second
    };
    let _ = writeln!(
        sql,
        "CREATE TABLE {s}.line ({child_id} {}, {child_second} {}, line_num int, qty int, \
         doc jsonb, PRIMARY KEY ({child_id}, {child_second}, line_num), \
         FOREIGN KEY ({child_id}, {child_second}) REFERENCES {s}.hdr ({id}, {second_name}));",
        id_part.sql(),
        second.sql(),
    );
    if rows > 0 {
        let _ = writeln!(
            sql,
            "INSERT INTO {s}.line SELECT {id}, {second_name}, l, l * 2, \
             jsonb_build_object('resourceType', 'Claim', 'status', 'active', 'item', l) \
             FROM {s}.hdr CROSS JOIN generate_series(1, 3) l;"
        );
    }
    // The same member id as a number in one table and as text or numeric in another.
    if rng.chance(60) {
        let other = *rng.pick(&["varchar(64)", "numeric(20,0)", "text"]);
        let _ = writeln!(
            sql,
            "CREATE TABLE {s}.mbr (mbr_id bigint PRIMARY KEY, ssn_num int, state_cd char(2));\n\
             CREATE TABLE {s}.enroll (enroll_id bigint PRIMARY KEY, mbr_id {other}, eff_dt date, term_dt date);"
        );
        if rows > 0 {
            let _ = writeln!(
                sql,
                "INSERT INTO {s}.mbr SELECT g + 1000, 100000000 + g * 7771, 'MA' FROM generate_series(1, {rows}) g;\n\
                 INSERT INTO {s}.enroll SELECT g, (g + 1000)::text::{other}, date '2020-01-01' + g, NULL FROM generate_series(1, {rows}) g;"
            );
        }
    }
    sql
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_on_mutated_schemas_are_accepted_and_stream() {
    use veil::review::workflow as review;
    let count: usize = std::env::var("VEIL_MUTATION_SCHEMAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("VEIL_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(26);
    let pg = PgCluster::start().expect("PostgreSQL 15 (scripts/install-deps)");
    pg.create_db("mut").unwrap();
    let registry = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&format!(
        "[source]\ndsn = {:?}\npublication = \"veil_pub\"\n\n[registry]\ndir = {:?}\n",
        pg.dsn("mut"),
        registry.path()
    ))
    .unwrap();
    let c = veil::devkit::demo::connect(&pg.dsn("mut")).await.unwrap();
    let mut rng = Rng(seed.max(1));
    for n in 0..count {
        let sql = schema(n, &mut rng);
        if let Err(e) = c.batch_execute(&sql).await {
            panic!("schema {n} (seed {seed}) does not load: {e}\n{sql}");
        }
    }
    veil::source::setup::run(&cfg).await.unwrap();

    let proposals = review::propose(&cfg).await.unwrap();
    let columns = proposals.len();
    let blocked: Vec<String> = proposals
        .iter()
        .filter(|p| p.proposal.as_ref().is_some_and(|x| x.class == "blocked"))
        .map(|p| format!("{}.{}", p.table, p.column))
        .collect();
    let repaired = proposals
        .iter()
        .filter(|p| {
            p.proposal.as_ref().is_some_and(|x| {
                x.notes
                    .iter()
                    .any(|n| n.starts_with("the first proposal was refused"))
            })
        })
        .count();
    if std::env::var("VEIL_MUTATION_SHOW").is_ok() {
        for p in &proposals {
            if let Some(x) = &p.proposal {
                println!(
                    "{}.{} {}: {} {:?} {:?} with {:?} — {}",
                    p.table,
                    p.column,
                    p.type_name,
                    x.class,
                    x.rule,
                    x.domain,
                    x.with,
                    x.notes.join("; ")
                );
            }
        }
    }
    let accepted = review::approve_all_proposed(&cfg, "bootstrap (mutation test)")
        .await
        .unwrap_or_else(|e| panic!("approve --all-proposed refused its own proposals: {e}"));
    assert_eq!(
        accepted,
        proposals.iter().filter(|p| p.proposal.is_some()).count()
    );

    // Every table plans under the registry approve wrote: the stream would not hold.
    let reg = veil::deid::registry::Registry::load(registry.path()).unwrap();
    let catalog = veil::devkit::demo::connect(&pg.dsn("mut")).await.unwrap();
    veil::pg::catalog::prepare_session(&catalog).await.unwrap();
    let tables: std::collections::BTreeSet<&str> =
        proposals.iter().map(|p| p.table.as_str()).collect();
    let scanner = std::sync::Arc::new(veil::deid::scanner::Scanner::standard());
    let master = veil::deid::tokenize::MasterKey::new([7; 32]);
    let mut holds = Vec::new();
    for t in &tables {
        let oid: u32 = catalog
            .query_one(
                "SELECT $1::text::regclass::oid",
                &[&veil::pg::quote::qualified(t)],
            )
            .await
            .unwrap()
            .get(0);
        let info = veil::pg::catalog::describe_table(&catalog, oid, None)
            .await
            .unwrap();
        if let Err(e) = veil::deid::gate::plan_table(
            "mut",
            &info,
            &info.identity_keys(),
            &reg,
            &master,
            &scanner,
        ) {
            holds.push(format!("{t}: {e}"));
        }
    }
    println!(
        "mutation run (seed {seed}): {count} schemas, {} tables, {columns} columns; {} proposed \
         blocked ({:.1}%), {repaired} proposals repaired by the set check; {accepted} accepted, \
         0 refusals; {} holds",
        tables.len(),
        blocked.len(),
        100.0 * blocked.len() as f64 / columns.max(1) as f64,
        holds.len()
    );
    assert!(holds.is_empty(), "the gate holds on:\n{}", holds.join("\n"));
    // Keys of every type stay keys: every key part is tokenized or a date token.
    for p in &proposals {
        let Some(x) = &p.proposal else { continue };
        if ["svc_dt", "clm_from_dt", "SRVC_DT", "obs_date", "adm_dt"].contains(&p.column.as_str())
            || ["evt_ts", "charttime", "recorded_at", "STRT_TS"].contains(&p.column.as_str())
        {
            assert_ne!(
                x.class, "safe",
                "{}.{}: a date kept as it is",
                p.table, p.column
            );
        }
    }
}
