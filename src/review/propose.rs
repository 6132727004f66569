//! The proposer: a class (one of the 18 Safe Harbor identifier classes, or safe) and a rule for
//! every pending column, from four signals, strongest first:
//!
//! 1. **Structure** — primary keys, unique columns and every column that references them
//!    (declared foreign keys, and undeclared references whose name says so *and* whose sampled
//!    values are all in the referenced key) are identifiers whatever their type, and share the
//!    token domain of the key they reference, across the whole schema.
//! 2. **Names** — whole words of the column name (snake_case, camelCase and digits split) looked
//!    up in a dictionary per class.
//! 3. **Content** — the scanner's detectors with validators, and recognisers of clinical code
//!    systems (LOINC, SNOMED CT, ICD-10, NDC, HCPCS, DICOM SOP classes) that make a column safe.
//! 4. **Statistics** — in the bounded sample: nearly all distinct means an identifier, few
//!    distinct values means a code list (never tokenized: counting would reverse it).
//!
//! Fail closed: `safe` needs positive evidence (a boolean, an enum, a code list, a recognised
//! code, a measurement that is not a key, a name hint of a safe kind). A column with no confident
//! rule is proposed `blocked` with "needs review", never safe. Every rule proposed is checked with
//! the gate's own binding for the column's type; one that does not bind becomes `blocked`.
//!
//! Confidence: **high** — a structural key or reference, a validator-backed detector on at least
//! half of the sample, a recognised code system on at least 90%; **medium** — a name hint, or
//! sample statistics alone; **low** — nothing but the type (then the proposal is `blocked`).
//! Evidence carries detector hit rates, name hints, distinct ratios and the sample size, never a
//! value.

use std::collections::{BTreeMap, BTreeSet};

use super::codes::code_system;
use super::error::ReviewError;
use super::names::{IdClass, NameHint, is_organisation_table, name_hint, words};
use crate::deid::registry::{Profile, Rule, SurrogateKind};
use crate::deid::scanner::{Detector, Scanner};
use crate::deid::tokenize::{BindCx, MasterKey, RuleKey};
use crate::pg::catalog::{TableInfo, TypeClass};
use serde::{Deserialize, Serialize};

/// Rows read per pending column.
pub const SAMPLE_ROWS: i64 = 1000;

/// Fewer non-null sampled values than this: a column's content says too little to decide on.
pub const SPARSE: usize = 20;

/// `20230415`: a date stored as a yyyymmdd number (years 1850–2100).
fn is_yyyymmdd(v: &str) -> bool {
    let v = v.trim();
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (y, m, d) = (
        v[0..4].parse::<u32>().unwrap_or(0),
        v[4..6].parse::<u32>().unwrap_or(0),
        v[6..8].parse::<u32>().unwrap_or(0),
    );
    (1850..=2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// A scanner proposal for one column: a class and a rule, with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// `safe`, `sensitive` or `blocked`.
    pub class: String,
    pub rule: Option<String>,
    pub domain: Option<String>,
    pub kind: Option<String>,
    /// Detector name → share of sampled non-null values it fired on (0..1).
    pub hit_rates: BTreeMap<String, f64>,
    pub name_hint: Option<String>,
    pub sampled: usize,
    /// The Safe Harbor identifier class (`names`, `geography`, … `other_id`); none for safe.
    #[serde(default)]
    pub identifier_class: Option<String>,
    /// `high`, `medium` or `low` (see `review::propose`).
    #[serde(default)]
    pub confidence: String,
    /// What else decided it (distinct ratio, key membership, code system, "needs review").
    #[serde(default)]
    pub notes: Vec<String>,
    /// `Some(false)`: a safe column the outbound scanner must not sample (see the notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<bool>,
    /// The `redact` rule's mode (`whole` or `spans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The `json` rule's paths: structural keys only (see [`json_paths`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<JsonPath>,
    /// The `date_token` rule's other key columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
}

/// One proposed path of a `json` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonPath {
    pub path: String,
    /// `keep` (a small list of values no detector fires on) or `scrub` (the key travels, the
    /// values become null).
    pub rule: String,
}

impl Proposal {
    pub fn evidence(&self) -> String {
        let mut parts: Vec<String> = self
            .hit_rates
            .iter()
            .map(|(d, r)| format!("{d} {:.0}%", r * 100.0))
            .collect();
        if let Some(h) = &self.name_hint {
            parts.push(format!("name suggests {h}"));
        }
        parts.extend(self.notes.iter().cloned());
        format!(
            "{} sampled; {}{}",
            self.sampled,
            if parts.is_empty() {
                "no detector fired".into()
            } else {
                parts.join(", ")
            },
            match (&self.identifier_class, self.confidence.as_str()) {
                (Some(c), "") => format!("; class {c}"),
                (Some(c), conf) => format!("; class {c}, confidence {conf}"),
                (None, "") => String::new(),
                (None, conf) => format!("; confidence {conf}"),
            }
        )
    }
}

/// The structural facts about every published column, across the whole schema.
#[derive(Debug, Default)]
pub struct Structure {
    /// (table, column) → the token domain of the key it is or references.
    pub keys: BTreeMap<(String, String), String>,
    /// Keys of lookup tables (dictionaries of codes: [`lookup_table`]) and the columns that
    /// reference them: codes, not identifiers of anyone.
    pub lookups: std::collections::BTreeSet<(String, String)>,
}

/// A dictionary of codes (`d_labitems`, `concept`, `drug_lookup`, `vocabulary`…) whose rows are
/// about no person: its key is a code.
pub fn lookup_table(info: &TableInfo) -> bool {
    let ws = words(&info.name);
    let named = ws.first().is_some_and(|w| w == "d")
        || ws.iter().any(|w| {
            matches!(
                w.as_str(),
                "dict"
                    | "dictionary"
                    | "lookup"
                    | "lkp"
                    | "vocabulary"
                    | "concept"
                    | "codes"
                    | "codeset"
                    | "items"
            )
        });
    named && !about_people(info)
}

/// Whether some column of the table names a person's key (`person_id`, `subject_id`, …).
fn about_people(info: &TableInfo) -> bool {
    info.columns.iter().any(|c| {
        let ws = words(&c.name);
        ws.iter().any(|w| {
            matches!(
                w.as_str(),
                "person"
                    | "patient"
                    | "pt"
                    | "subject"
                    | "member"
                    | "mbr"
                    | "beneficiary"
                    | "bene"
                    | "enrollee"
                    | "insured"
                    | "subscriber"
            )
        }) && ws
            .iter()
            .any(|w| matches!(w.as_str(), "id" | "key" | "num" | "no"))
    })
}

fn singular(t: &str) -> String {
    let t = t.rsplit('.').next().unwrap_or(t);
    t.strip_suffix('s').unwrap_or(t).to_owned()
}

/// The name a key's domain starts with: the table's name in the singular, after its schema
/// when that is not `public` (two schemas' tables of one name are two things).
fn domain_stem(schema: &str, table: &str) -> String {
    if schema == "public" {
        singular(table)
    } else {
        format!("{schema}_{}", singular(table))
    }
}

impl Structure {
    /// Keys, unique columns and declared references; a reference takes the domain of the key at
    /// the end of its chain.
    pub fn of(tables: &[TableInfo]) -> Structure {
        let mut own: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut refs: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
        for t in tables {
            let q = t.qualified();
            let mut key_cols: Vec<&String> = t.primary_key.iter().collect();
            for (_, cols) in &t.unique_keys {
                key_cols.extend(cols.iter());
            }
            for c in key_cols {
                own.entry((q.clone(), c.clone()))
                    .or_insert_with(|| format!("{}_{c}", domain_stem(&t.schema, &t.name)));
            }
            for fk in &t.foreign_keys {
                for (c, rc) in fk.columns.iter().zip(&fk.ref_columns) {
                    refs.insert((q.clone(), c.clone()), (fk.ref_table.clone(), rc.clone()));
                }
            }
        }
        let mut keys = own.clone();
        for (col, target) in &refs {
            let mut at = target.clone();
            let mut hops = 0;
            while let Some(next) = refs.get(&at) {
                if hops > 32 || next == col {
                    break;
                }
                at = next.clone();
                hops += 1;
            }
            let domain = own.get(&at).cloned().unwrap_or_else(|| {
                let (schema, table) = at.0.split_once('.').unwrap_or(("public", &at.0));
                format!("{}_{}", domain_stem(schema, table), at.1)
            });
            keys.insert(col.clone(), domain.clone());
            // The referenced key and the reference share one domain.
            keys.insert(at, domain);
        }
        let mut lookups = std::collections::BTreeSet::new();
        for t in tables.iter().filter(|t| lookup_table(t)) {
            for c in &t.primary_key {
                lookups.insert((t.qualified(), c.clone()));
            }
        }
        for (col, target) in &refs {
            if lookups.contains(target) {
                lookups.insert(col.clone());
            }
        }
        Structure { keys, lookups }
    }

    /// The single-column primary key an undeclared reference named `column` would point at
    /// (`patient`, `patient_id`, `patientId` → `patients.id`), if there is exactly one.
    pub fn virtual_target<'a>(
        tables: &'a [TableInfo],
        here: &TableInfo,
        column: &str,
    ) -> Option<(&'a TableInfo, String)> {
        let ws = words(column);
        let stem: Vec<&str> = ws
            .iter()
            .map(String::as_str)
            .filter(|w| !matches!(*w, "id" | "uid" | "key" | "fk" | "ref"))
            .collect();
        if stem.is_empty() {
            return None;
        }
        let only = |found: Vec<&'a TableInfo>| match found.as_slice() {
            [t] => Some((*t, t.primary_key[0].clone())),
            _ => None,
        };
        let keyed = |t: &&TableInfo| t.oid != here.oid && t.primary_key.len() == 1;
        // The table named by the stem, or by its last words (`preceding_visit_occurrence_id` →
        // `visit_occurrence`), the longest that names one.
        for skip in 0..stem.len() {
            let s = stem[skip..].join("_");
            let found: Vec<&TableInfo> = tables
                .iter()
                .filter(keyed)
                .filter(|t| singular(&t.name) == s || t.name == s)
                .collect();
            if !found.is_empty() {
                return only(found);
            }
        }
        // A column named as another table's one-column key (`hadm_id` → `admissions.hadm_id`).
        only(
            tables
                .iter()
                .filter(keyed)
                .filter(|t| t.primary_key[0] == column)
                .collect(),
        )
    }
}

/// A table about organisations (by its name) whose rows are not also about a person: a
/// `payer_plan_period` with a `person_id` is a person's enrollment, not a payer.
fn organisation_rows(info: &TableInfo) -> bool {
    is_organisation_table(&info.name) && !about_people(info)
}

/// Everything the proposer knows about one column before it decides.
pub struct ColumnFacts<'a> {
    pub info: &'a TableInfo,
    pub column: &'a str,
    pub class: Option<&'a TypeClass>,
    /// Non-null sampled values, as text.
    pub sample: &'a [String],
    /// The token domain when the column is a key or a reference (declared or verified).
    pub key_domain: Option<String>,
    /// The other columns of the key or reference the column is part of ([`key_partners`]).
    pub key_with: Vec<String>,
    /// A part of a composite primary or unique key that is in no foreign key and that no
    /// foreign key names: its key's other parts keep rows apart ([`key_part_only`]).
    pub key_part_only: bool,
    /// The key of a lookup table, or a reference to one ([`Structure::lookups`]).
    pub lookup: bool,
}

/// Whether `column` is only a part of a composite key of its table: in a primary or unique key
/// of two or more columns, in none of the table's foreign keys, named by no foreign key of
/// `tables`.
pub fn key_part_only(tables: &[TableInfo], info: &TableInfo, column: &str) -> bool {
    let q = info.qualified();
    let composite = (info.primary_key.len() > 1 && info.primary_key.iter().any(|c| c == column))
        || info
            .unique_keys
            .iter()
            .any(|(_, cols)| cols.len() > 1 && cols.iter().any(|c| c == column));
    let single = (info.primary_key.len() == 1 && info.primary_key[0] == column)
        || info
            .unique_keys
            .iter()
            .any(|(_, cols)| cols.len() == 1 && cols[0] == column);
    composite
        && !single
        && !info
            .foreign_keys
            .iter()
            .any(|fk| fk.columns.iter().any(|c| c == column))
        && !tables.iter().any(|t| {
            t.foreign_keys
                .iter()
                .any(|fk| fk.ref_table == q && fk.ref_columns.iter().any(|c| c == column))
        })
}

/// The other columns of the key a column is part of, in the order both ends of a reference
/// agree on (the referenced key's column names): a foreign key first (its tuple must match the
/// referenced one), else the primary key, else a unique key. Empty for a single-column key.
pub fn key_partners(info: &TableInfo, column: &str) -> Vec<String> {
    if let Some(fk) = info
        .foreign_keys
        .iter()
        .find(|fk| fk.columns.iter().any(|c| c == column))
    {
        let mut pairs: Vec<(&String, &String)> = fk
            .ref_columns
            .iter()
            .zip(&fk.columns)
            .filter(|(_, c)| *c != column)
            .collect();
        pairs.sort();
        return pairs.into_iter().map(|(_, c)| c.clone()).collect();
    }
    let key = if info.primary_key.iter().any(|c| c == column) {
        Some(&info.primary_key)
    } else {
        info.unique_keys
            .iter()
            .map(|(_, cols)| cols)
            .find(|cols| cols.iter().any(|c| c == column))
    };
    let mut others: Vec<String> = key
        .map(|cols| cols.iter().filter(|c| *c != column).cloned().collect())
        .unwrap_or_default();
    others.sort();
    others
}

/// The proposal for one column (checked against the gate's binding by [`checked`]).
pub fn propose(scanner: &Scanner, f: &ColumnFacts) -> Proposal {
    outbound_checked(decide(scanner, f), scanner, f)
}

/// A column proposed safe is scanned in flight, and a strong scanner hit holds the stream. A
/// proposal that the scanner would hold on at once is no proposal: where the shape is explained
/// (a table about organisations, whose phones are the organisation's; a recognised code system,
/// whose UIDs look like IP addresses) it says `scan = false`, with a note the reviewer sees;
/// anywhere else the column needs review.
fn outbound_checked(mut p: Proposal, scanner: &Scanner, f: &ColumnFacts) -> Proposal {
    let scanned = matches!(
        f.class,
        Some(TypeClass::Text | TypeClass::Json | TypeClass::Jsonb)
    );
    if p.class != "safe" || !scanned || f.sample.is_empty() {
        return p;
    }
    let mut hits: BTreeMap<&'static str, usize> = BTreeMap::new();
    for v in f.sample {
        for d in scanner.strong_hits(v) {
            *hits.entry(d.name()).or_default() += 1;
        }
    }
    let Some((detector, count)) = hits.iter().max_by_key(|(_, c)| **c) else {
        return p;
    };
    let pct = 100.0 * *count as f64 / f.sample.len() as f64;
    let explained = if organisation_rows(f.info) {
        Some("an organisation's, not a person's")
    } else {
        code_system(f.sample, &words(f.column))
    };
    if let Some(why) = explained {
        p.scan = Some(false);
        p.notes.push(format!(
            "the outbound scanner finds {detector}-shaped values in {pct:.0}% of the sample: \
             proposed with scan = false ({why})"
        ));
    } else {
        p.class = "blocked".into();
        p.confidence = "low".into();
        p.notes.push(format!(
            "needs review: the outbound scanner finds {detector}-shaped values in {pct:.0}% of \
             the sample; safe would hold the stream"
        ));
    }
    p
}

fn decide(scanner: &Scanner, f: &ColumnFacts) -> Proposal {
    let n = f.sample.len();
    let rate = |c: usize| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    let mut whole: BTreeMap<Detector, usize> = BTreeMap::new();
    let mut partial: BTreeMap<Detector, usize> = BTreeMap::new();
    for v in f.sample {
        if let Some(d) = scanner.whole_value(v) {
            *whole.entry(d).or_default() += 1;
        }
        for d in scanner.detect(v) {
            *partial.entry(d).or_default() += 1;
        }
    }
    let hit_rates: BTreeMap<String, f64> = partial
        .iter()
        .map(|(d, c)| (d.name().to_owned(), rate(*c)))
        .collect();
    let distinct = f.sample.iter().collect::<BTreeSet<_>>().len();
    let distinct_ratio = rate(distinct);
    let ws = words(f.column);
    let hint = name_hint(f.column);
    let mut p = Proposal {
        class: String::new(),
        rule: None,
        domain: None,
        kind: None,
        hit_rates,
        name_hint: hint.map(|h| match h {
            NameHint::Id(c) => c.name().to_owned(),
            NameHint::SafeKind => "safe kind".to_owned(),
        }),
        sampled: n,
        identifier_class: None,
        confidence: String::new(),
        notes: Vec::new(),
        scan: None,
        mode: None,
        paths: Vec::new(),
        with: Vec::new(),
    };
    p.notes.push(format!(
        "{distinct} distinct of {n} sampled ({:.0}%)",
        distinct_ratio * 100.0
    ));
    let set = |p: &mut Proposal,
               id: Option<IdClass>,
               class: &str,
               rule: Option<&str>,
               domain: Option<String>,
               conf: &str| {
        p.identifier_class = id.map(|c| c.name().to_owned());
        p.class = class.to_owned();
        p.rule = rule.map(str::to_owned);
        p.domain = domain;
        p.confidence = conf.to_owned();
    };
    let int = matches!(
        f.class,
        Some(TypeClass::Int2 | TypeClass::Int4 | TypeClass::Int8 | TypeClass::Numeric)
    );
    let float = matches!(f.class, Some(TypeClass::Float4 | TypeClass::Float8));
    let date = matches!(
        f.class,
        Some(TypeClass::Date | TypeClass::Timestamp | TypeClass::Timestamptz)
    );

    // 1. Structure.
    if let Some(domain) = &f.key_domain
        && date
    {
        // Safe Harbor keeps no date element but the year; a key must stay a key and a
        // reference must keep finding it.
        set(
            &mut p,
            Some(IdClass::Dates),
            "sensitive",
            Some("date_token"),
            Some(domain.clone()),
            "high",
        );
        p.with = f.key_with.clone();
        p.notes
            .push("a date in a key or a reference: a date of the same year per key tuple".into());
        return p;
    }
    // The key of a dictionary of codes, and references to it: codes, not anyone's identifier.
    if f.key_domain.is_some() && f.lookup && !date {
        set(&mut p, None, "safe", None, None, "medium");
        p.notes
            .push("a lookup table's code (a dictionary of codes no person is in)".into());
        return p;
    }
    // A line or sequence number, or a type code, that is one part of a composite key next to
    // the parts that identify (tokenized): not an identifier, and kept so dev can still read it.
    if f.key_domain.is_some() && f.key_part_only && !date {
        let ordinal_name = ws.iter().any(|w| {
            matches!(
                w.as_str(),
                "line"
                    | "ln"
                    | "seq"
                    | "sequence"
                    | "ordinal"
                    | "pos"
                    | "position"
                    | "idx"
                    | "index"
                    | "rank"
                    | "ver"
                    | "version"
                    | "rev"
                    | "revision"
                    | "item"
            )
        });
        // Small numbers that repeat across rows (line 1, 2, 3 of every claim); a number unique
        // to its row is a row's own id, whatever its name.
        let small_ints = int
            && !f.sample.is_empty()
            && distinct_ratio <= 0.5
            && f.sample
                .iter()
                .all(|v| v.parse::<i64>().is_ok_and(|x| (0..=9999).contains(&x)));
        let text = matches!(f.class, Some(TypeClass::Text));
        let code = text
            && !f.sample.is_empty()
            && ((matches!(hint, Some(NameHint::SafeKind))
                && f.sample.iter().all(|v| v.chars().count() <= 8)
                && distinct <= 50)
                || code_system(f.sample, &ws).is_some()
                || (n >= SPARSE
                    && distinct <= 50
                    && distinct_ratio <= 0.1
                    && f.sample.iter().all(|v| v.chars().count() <= 40)
                    && !matches!(hint, Some(NameHint::Id(_)))));
        if (ordinal_name && (small_ints || f.sample.is_empty() && int)) || code {
            set(&mut p, None, "safe", None, None, "medium");
            p.notes.push(
                "an ordinal or a code within a composite key: the key's other parts keep rows \
                 apart"
                    .into(),
            );
            return p;
        }
    }
    if let Some(domain) = &f.key_domain {
        p.notes.push("key or reference to a key".into());
        // A key is "any other unique identifying number" unless its name says which personal
        // number it is (a login `account_id` is not a financial account number).
        let id = match hint {
            Some(NameHint::Id(
                c @ (IdClass::Ssn
                | IdClass::Mrn
                | IdClass::HealthPlan
                | IdClass::Email
                | IdClass::Licence
                | IdClass::Phone
                | IdClass::Device
                | IdClass::Vehicle),
            )) => c,
            _ => IdClass::OtherId,
        };
        set(
            &mut p,
            Some(id),
            "sensitive",
            Some("tokenize"),
            Some(domain.clone()),
            "high",
        );
        if matches!(f.class, Some(TypeClass::Text)) && id == IdClass::Email {
            p.rule = Some("email".into());
        }
        return p;
    }
    // A table about organisations: its names, addresses and phones are the organisation's.
    if organisation_rows(f.info)
        && matches!(
            hint,
            Some(NameHint::Id(
                IdClass::Names | IdClass::Geography | IdClass::Phone | IdClass::Fax | IdClass::Url
            ))
        )
        && !f.sample.is_empty()
    {
        p.notes.push("a column of an organisation table".into());
        set(&mut p, None, "safe", None, None, "medium");
        return p;
    }
    let Some(class) = f.class else {
        set(&mut p, hint_class(hint), "blocked", None, None, "low");
        p.notes
            .push("needs review: a type veil does not publish".into());
        return p;
    };
    // 2–4 by type.
    let top = whole
        .iter()
        .max_by_key(|(_, c)| **c)
        .filter(|(_, c)| rate(**c) >= 0.5)
        .map(|(d, _)| *d);
    match class {
        TypeClass::Bool | TypeClass::Enum => {
            set(&mut p, None, "safe", None, None, "high");
        }
        TypeClass::Uuid => {
            // A uuid names one thing: an identifier whatever its cardinality.
            set(
                &mut p,
                Some(id_or(hint, IdClass::OtherId)),
                "sensitive",
                Some("tokenize"),
                Some(f.column.to_owned()),
                "medium",
            );
        }
        _ if date => {
            set(
                &mut p,
                Some(IdClass::Dates),
                "sensitive",
                Some("year_only"),
                None,
                "high",
            );
        }
        TypeClass::Time | TypeClass::Timetz | TypeClass::Interval => {
            set(&mut p, None, "safe", None, None, "medium");
        }
        TypeClass::Json | TypeClass::Jsonb => {
            // Keys can be data: only structural keys (in most documents, identifier-shaped, no
            // detector firing) are named; every other key is tokenized and every other leaf
            // nulled until a reviewer names more paths.
            set(
                &mut p,
                Some(id_or(hint, IdClass::OtherId)),
                "sensitive",
                Some("json"),
                None,
                "medium",
            );
            p.paths = json_paths(scanner, f.sample);
            p.notes.push(format!(
                "{} structural paths named ({} kept); other keys tokenized, other leaves null",
                p.paths.len(),
                p.paths.iter().filter(|x| x.rule == "keep").count()
            ));
        }
        TypeClass::Bytea => match hint {
            Some(NameHint::Id(c)) => {
                set(&mut p, Some(c), "sensitive", Some("scrub"), None, "medium")
            }
            _ => {
                set(&mut p, None, "blocked", None, None, "low");
                p.notes.push("needs review: binary content".into());
            }
        },
        TypeClass::Array(_) => {
            let low = distinct <= 20 || distinct_ratio <= 0.05;
            match hint {
                Some(NameHint::Id(c)) => {
                    set(&mut p, Some(c), "sensitive", Some("scrub"), None, "medium")
                }
                _ if top.is_some() || partial.contains_key(&Detector::Name) => set(
                    &mut p,
                    Some(IdClass::Names),
                    "sensitive",
                    Some("scrub"),
                    None,
                    "medium",
                ),
                _ if low => set(&mut p, None, "safe", None, None, "medium"),
                _ => {
                    set(&mut p, None, "blocked", None, None, "low");
                    p.notes
                        .push("needs review: array without a confident rule".into());
                }
            }
        }
        // Ages: Safe Harbor keeps them but for those over 89 (aggregated into 90).
        _ if (int || float) && ws.iter().any(|w| w == "age") => {
            set(
                &mut p,
                Some(IdClass::Dates),
                "sensitive",
                Some("age_cap"),
                None,
                "medium",
            );
            p.notes.push("an age: over 89 becomes 90".into());
        }
        _ if (int || float)
            && !matches!(hint, Some(NameHint::SafeKind))
            && super::shapes::coordinates(f.sample) =>
        {
            set(
                &mut p,
                Some(IdClass::Geography),
                "sensitive",
                Some("scrub"),
                None,
                "medium",
            );
            p.notes
                .push("coordinate-shaped: within ±180 with 4+ decimals (finer than 1 km)".into());
        }
        _ if int || float => match hint {
            Some(NameHint::Id(IdClass::Geography)) | Some(NameHint::Id(IdClass::Dates)) => {
                // Sub-state geography (coordinates, ZIPs and counties as numbers) has no
                // Safe Harbor rule but removal.
                let c = if matches!(hint, Some(NameHint::Id(IdClass::Dates))) {
                    IdClass::Dates
                } else {
                    IdClass::Geography
                };
                set(&mut p, Some(c), "sensitive", Some("scrub"), None, "medium");
            }
            Some(NameHint::Id(c)) if !float => {
                if distinct <= 20 && n >= 50 {
                    set(&mut p, Some(c), "sensitive", Some("scrub"), None, "medium");
                } else {
                    set(
                        &mut p,
                        Some(c),
                        "sensitive",
                        Some("tokenize"),
                        Some(c.name().to_owned()),
                        "medium",
                    );
                }
            }
            Some(NameHint::Id(c)) => {
                set(&mut p, Some(c), "sensitive", Some("scrub"), None, "medium")
            }
            _ => {
                // Evidence first: a validated detector on a meaningful share of the values (a
                // nine-digit SSN, a ten-digit NPI or phone) makes it an identifier, and dates
                // stored as numbers (yyyymmdd) are dates.
                let ids = whole
                    .iter()
                    .filter(|(d, _)| !matches!(d, Detector::Zip | Detector::Date | Detector::Name))
                    .max_by_key(|(_, c)| **c)
                    .filter(|(_, c)| rate(**c) >= 0.1);
                let yyyymmdd =
                    n > 0 && rate(f.sample.iter().filter(|v| is_yyyymmdd(v)).count()) >= 0.9;
                let date_name = ws
                    .iter()
                    .any(|w| matches!(w.as_str(), "dt" | "date" | "dte" | "dob" | "yyyymmdd"));
                let codes = code_system(f.sample, &ws);
                // Named as an id (`…_id`, `…_key`) and no declared key explains it: an identifier
                // reference until a reviewer says otherwise (codes, concepts, items and types
                // are named so).
                let id_name = ws
                    .iter()
                    .any(|w| matches!(w.as_str(), "id" | "key" | "fk" | "ref" | "uid"))
                    && !ws.iter().any(|w| {
                        matches!(
                            w.as_str(),
                            "concept"
                                | "type"
                                | "typ"
                                | "code"
                                | "cd"
                                | "item"
                                | "status"
                                | "version"
                                | "category"
                                | "class"
                                | "kind"
                                | "unit"
                                | "seq"
                                | "line"
                                | "lang"
                                | "language"
                        )
                    });
                if id_name && !float && codes.is_none() {
                    set(
                        &mut p,
                        Some(IdClass::OtherId),
                        "sensitive",
                        Some("tokenize"),
                        Some(f.column.to_owned()),
                        "medium",
                    );
                    p.notes.push(
                        "named as an identifier, and no declared key or reference explains it"
                            .into(),
                    );
                } else if let Some(cs) = codes {
                    // A code system's own validator beats a detector's shape (SNOMED codes are
                    // long numbers).
                    set(&mut p, None, "safe", None, None, "medium");
                    p.notes.push(format!("{cs} codes"));
                } else if let Some((d, c)) = ids
                    && !float
                {
                    set(
                        &mut p,
                        Some(detector_class(*d)),
                        "sensitive",
                        Some("tokenize"),
                        Some(detector_class(*d).name().to_owned()),
                        "medium",
                    );
                    p.notes.push(format!(
                        "{}-shaped numbers in {:.0}% of the sample",
                        d.name(),
                        100.0 * rate(*c)
                    ));
                } else if yyyymmdd || (date_name && !float) {
                    set(
                        &mut p,
                        Some(IdClass::Dates),
                        "sensitive",
                        Some("scrub"),
                        None,
                        "medium",
                    );
                    p.notes.push(if yyyymmdd {
                        "dates stored as yyyymmdd numbers".into()
                    } else {
                        "a date by its name, stored as a number".into()
                    });
                } else {
                    if let Some(cs) = code_system(f.sample, &ws) {
                        p.notes.push(format!("{cs} codes"));
                    }
                    set(&mut p, None, "safe", None, None, "medium");
                    p.notes.push("a number that is not a key".into());
                }
            }
        },
        TypeClass::Text => {
            // Code systems with their own validators first: a CPT code is ZIP-shaped, a LOINC
            // code date-shaped.
            if let Some(cs) = code_system(f.sample, &ws) {
                p.notes.push(format!("{cs} codes"));
                set(&mut p, None, "safe", None, None, "high");
                return p;
            }
            // Shapes the scanner does not know: device identifiers and coordinates.
            if super::shapes::udis(f.sample) {
                set(
                    &mut p,
                    Some(IdClass::Device),
                    "sensitive",
                    Some("tokenize"),
                    Some(f.column.to_owned()),
                    "high",
                );
                p.notes.push("UDI-shaped (GS1 or HIBCC)".into());
                return p;
            }
            if !matches!(hint, Some(NameHint::SafeKind)) && super::shapes::coordinates(f.sample) {
                set(
                    &mut p,
                    Some(IdClass::Geography),
                    "sensitive",
                    Some("scrub"),
                    None,
                    "medium",
                );
                p.notes.push(
                    "coordinate-shaped: within ±180 with 4+ decimals (finer than 1 km)".into(),
                );
                return p;
            }
            // Measurements stored as text: decimal numbers, not keys, no identifier name.
            let decimals = f
                .sample
                .iter()
                .filter(|v| {
                    v.parse::<f64>().is_ok()
                        && v.split_once('.')
                            .is_some_and(|(_, frac)| frac.bytes().any(|b| b != b'0'))
                })
                .count();
            let numbers = f.sample.iter().filter(|v| v.parse::<f64>().is_ok()).count();
            if n > 0
                && numbers == n
                && rate(decimals) >= 0.5
                && !matches!(hint, Some(NameHint::Id(_)))
            {
                p.notes.push("decimal measurements".into());
                set(&mut p, None, "safe", None, None, "medium");
                return p;
            }
            // Then validator-backed detectors on half the sample.
            if let Some(d) = top {
                // The name refines a compatible detector: a phone-shaped fax number is a fax.
                let id = match (detector_class(d), hint) {
                    (IdClass::Phone, Some(NameHint::Id(IdClass::Fax))) => IdClass::Fax,
                    (c, _) => c,
                };
                let (rule, domain, kind) = text_rule(d, f.column);
                set(&mut p, Some(id), "sensitive", Some(rule), domain, "high");
                p.kind = kind.map(str::to_owned);
                return p;
            }
            // Few distinct values, or initials: a token or surrogate would be given back by
            // counting (and would not fit a one-letter column).
            let initials = n > 0 && f.sample.iter().all(|v| v.chars().count() <= 2);
            // A small list needs a sample that shows it (10 distinct of 10 is no list).
            let low = n >= SPARSE
                && ((distinct <= 25 && distinct * 2 <= n)
                    || (distinct <= 200 && distinct_ratio <= 0.1)
                    || initials);
            if n < SPARSE && !matches!(hint, Some(NameHint::Id(_)) | Some(NameHint::SafeKind)) {
                // Too few values to judge by content: decided by name and type.
                set(&mut p, None, "sensitive", Some("redact"), None, "low");
                p.identifier_class = Some(IdClass::Names.name().to_owned());
                p.mode = Some("whole".into());
                p.notes.push(format!(
                    "only {n} values to look at: free text without a telling name is redacted \
                     whole until a reviewer decides"
                ));
                return p;
            }
            match hint {
                Some(NameHint::Id(c)) => {
                    let (rule, domain, kind) = hint_text_rule(c, f.column, low);
                    set(&mut p, Some(c), "sensitive", Some(rule), domain, "medium");
                    p.kind = kind.map(str::to_owned);
                }
                // A category by its name (race, status, type) with a small list of values:
                // whatever a name detector thinks of `WHITE` or `ASIAN`.
                Some(NameHint::SafeKind) if low => {
                    set(&mut p, None, "safe", None, None, "medium");
                    p.notes
                        .push("a small list of values under a category's name".into());
                }
                _ if partial
                    .iter()
                    .filter(|(d, _)| !matches!(d, Detector::Zip | Detector::Date))
                    .any(|(_, c)| rate(*c) >= 0.05) =>
                {
                    // Short values (a display name, a label) are the identifier itself: replaced
                    // whole, because redaction keeps whatever the detectors miss. Longer text
                    // is free text that carries identifiers: redacted.
                    let mut lens: Vec<(usize, usize)> = f
                        .sample
                        .iter()
                        .map(|v| (v.split_whitespace().count(), v.chars().count()))
                        .collect();
                    lens.sort();
                    let (words_mid, _) = lens[lens.len() / 2];
                    let mut chars: Vec<usize> = lens.iter().map(|l| l.1).collect();
                    chars.sort();
                    let short = words_mid <= 4 && chars[chars.len() / 2] <= 40;
                    let top = partial
                        .iter()
                        .filter(|(d, _)| !matches!(d, Detector::Zip | Detector::Date))
                        .max_by_key(|(_, c)| **c)
                        .map(|(d, _)| *d);
                    match top {
                        Some(Detector::Name) if short => {
                            set(
                                &mut p,
                                Some(IdClass::Names),
                                "sensitive",
                                Some("surrogate"),
                                Some(f.column.to_owned()),
                                "medium",
                            );
                            p.kind = Some("name".into());
                            p.notes
                                .push("short values the name detector fires on".into());
                        }
                        Some(d) if short => {
                            set(
                                &mut p,
                                Some(detector_class(d)),
                                "sensitive",
                                Some("tokenize"),
                                Some(f.column.to_owned()),
                                "medium",
                            );
                            p.notes.push("short values a detector fires on".into());
                        }
                        _ => {
                            set(
                                &mut p,
                                Some(IdClass::Names),
                                "sensitive",
                                Some("redact"),
                                None,
                                "medium",
                            );
                            // Span redaction keeps whatever the detectors miss (a name in a
                            // script or shape they do not know): whole until a reviewer opts in.
                            p.mode = Some("whole".into());
                            p.notes.push(
                                "free text: redacted whole; `mode = \"spans\"` keeps the text \
                                 around the detectors' hits (a reviewer's choice)"
                                    .into(),
                            );
                        }
                    }
                }
                _ if low => {
                    set(&mut p, None, "safe", None, None, "medium");
                    p.notes.push("a small list of values".into());
                }
                Some(NameHint::SafeKind) if distinct_ratio < 0.9 => {
                    set(&mut p, None, "safe", None, None, "medium");
                }
                _ if n >= 20 && distinct_ratio >= 0.9 => {
                    set(
                        &mut p,
                        Some(IdClass::OtherId),
                        "sensitive",
                        Some("tokenize"),
                        Some(f.column.to_owned()),
                        "medium",
                    );
                    p.notes.push("nearly all values distinct".into());
                }
                _ => {
                    set(&mut p, None, "blocked", None, None, "low");
                    p.notes.push("needs review: no confident rule".into());
                }
            }
        }
        _ => {
            set(&mut p, hint_class(hint), "blocked", None, None, "low");
            p.notes.push("needs review".into());
        }
    }
    p
}

/// The paths of a `json` proposal: keys present in at least half of the sampled documents (ten
/// or more), each segment identifier-shaped ASCII on which no detector fires — structure, not
/// data, so they may be printed and travel. Only the deepest such paths are listed (their
/// parents are named by them). A leaf path whose values are a small list no detector fires on,
/// under a name that is no identifier's, is kept; every other path is scrubbed (the key
/// travels, the values become null).
pub fn json_paths(scanner: &Scanner, sample: &[String]) -> Vec<JsonPath> {
    use serde_json::Value as J;
    fn structural_key(scanner: &Scanner, k: &str) -> bool {
        let b = k.as_bytes();
        !b.is_empty()
            && b.len() <= 40
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
            && scanner.detect(k).is_empty()
    }
    fn walk(
        v: &J,
        at: &str,
        scanner: &Scanner,
        seen: &mut BTreeSet<String>,
        leaves: &mut BTreeMap<String, Vec<String>>,
    ) {
        match v {
            J::Object(m) => {
                for (k, child) in m {
                    if !structural_key(scanner, k) {
                        continue;
                    }
                    let p = format!("{at}.{k}");
                    seen.insert(p.clone());
                    walk(child, &p, scanner, seen, leaves);
                }
            }
            J::Array(items) => {
                let p = format!("{at}[*]");
                for item in items {
                    walk(item, &p, scanner, seen, leaves);
                }
            }
            J::Null => {}
            J::String(s) => leaves.entry(at.to_owned()).or_default().push(s.clone()),
            other => leaves
                .entry(at.to_owned())
                .or_default()
                .push(other.to_string()),
        }
    }
    let mut docs = 0usize;
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut leaves: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in sample {
        let Ok(doc) = serde_json::from_str::<J>(v) else {
            continue;
        };
        docs += 1;
        let mut seen = BTreeSet::new();
        walk(&doc, "$", scanner, &mut seen, &mut leaves);
        for p in seen {
            *count.entry(p).or_default() += 1;
        }
    }
    if docs < 10 {
        return Vec::new();
    }
    let frequent: BTreeSet<&String> = count
        .iter()
        .filter(|(_, c)| **c * 2 >= docs)
        .map(|(p, _)| p)
        .collect();
    let mut out = Vec::new();
    for p in &frequent {
        // The deepest: no frequent path extends this one.
        let deeper = frequent.iter().any(|q| {
            q.len() > p.len()
                && q.starts_with(p.as_str())
                && matches!(q.as_bytes()[p.len()], b'.' | b'[')
        });
        if deeper {
            continue;
        }
        let last = p
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .trim_end_matches("[*]");
        let values = leaves.get(*p).map(Vec::as_slice).unwrap_or_default();
        let distinct = values.iter().collect::<BTreeSet<_>>().len();
        let keep = !values.is_empty()
            && values.len() >= 10
            && distinct <= 20
            && distinct * 5 <= values.len().max(5)
            && !matches!(name_hint(last), Some(NameHint::Id(_)))
            && values.iter().all(|v| scanner.detect(v).is_empty());
        out.push(JsonPath {
            path: (*p).clone(),
            rule: if keep { "keep" } else { "scrub" }.into(),
        });
    }
    out
}

fn hint_class(h: Option<NameHint>) -> Option<IdClass> {
    match h {
        Some(NameHint::Id(c)) => Some(c),
        _ => None,
    }
}

fn id_or(h: Option<NameHint>, default: IdClass) -> IdClass {
    hint_class(h).unwrap_or(default)
}

fn detector_class(d: Detector) -> IdClass {
    match d {
        Detector::Ssn => IdClass::Ssn,
        Detector::Email => IdClass::Email,
        Detector::Url => IdClass::Url,
        Detector::Mrn => IdClass::Mrn,
        Detector::Npi => IdClass::OtherId,
        Detector::Card => IdClass::Account,
        Detector::Imei | Detector::Mac => IdClass::Device,
        Detector::Phone => IdClass::Phone,
        Detector::Date => IdClass::Dates,
        Detector::Vin => IdClass::Vehicle,
        Detector::Ipv4 | Detector::Ipv6 => IdClass::Ip,
        Detector::Address | Detector::Zip => IdClass::Geography,
        Detector::Name => IdClass::Names,
    }
}

fn surrogate_kind(column: &str) -> &'static str {
    let ws = words(column);
    let has = |l: &[&str]| ws.iter().any(|w| l.contains(&w.as_str()));
    if has(&["given", "first", "1st"]) {
        "given_name"
    } else if has(&["family", "last", "surname", "maiden"]) {
        "family_name"
    } else {
        "name"
    }
}

/// The rule for a text column a whole-value detector recognised.
fn text_rule(d: Detector, column: &str) -> (&'static str, Option<String>, Option<&'static str>) {
    match d {
        Detector::Ssn => ("ssn", Some("ssn".into()), None),
        Detector::Email => ("email", Some("email".into()), None),
        Detector::Name => (
            "surrogate",
            Some(column.to_owned()),
            Some(surrogate_kind(column)),
        ),
        Detector::Address => ("scrub", None, None),
        Detector::Zip => ("zip3", None, None),
        // A date in a text column: no date rule binds to text.
        Detector::Date => ("scrub", None, None),
        other => ("tokenize", Some(other.name().to_owned()), None),
    }
}

/// The rule for a text column only its name classified.
fn hint_text_rule(
    c: IdClass,
    column: &str,
    low_cardinality: bool,
) -> (&'static str, Option<String>, Option<&'static str>) {
    match c {
        IdClass::Names if !low_cardinality => (
            "surrogate",
            Some(column.to_owned()),
            Some(surrogate_kind(column)),
        ),
        // Safe Harbor keeps no geography below the state but the 3-digit ZIP: everything else
        // is removed (coordinates could be rounded only under expert determination).
        IdClass::Geography => {
            let ws = words(column);
            if ws
                .iter()
                .any(|w| matches!(w.as_str(), "zip" | "zipcode" | "postal" | "postcode"))
            {
                ("zip3", None, None)
            } else {
                ("scrub", None, None)
            }
        }
        IdClass::Email => ("email", Some("email".into()), None),
        IdClass::Ssn => ("ssn", Some("ssn".into()), None),
        IdClass::Dates => ("scrub", None, None),
        // A handful of values cannot be tokenized without giving them back by counting.
        _ if low_cardinality => ("scrub", None, None),
        other => ("tokenize", Some(other.name().to_owned()), None),
    }
}

/// Checks a proposal with the gate's own binding for the column's type: a rule that would not
/// bind (and so would hold the stream forever once approved) becomes `blocked`, "needs review".
pub fn checked(
    mut p: Proposal,
    class: Option<&TypeClass>,
    info: &TableInfo,
    column: &str,
    scanner: &std::sync::Arc<Scanner>,
) -> Proposal {
    let Some(rule_name) = p.rule.clone() else {
        return p;
    };
    if rule_name == "json" {
        // Proposed for json and jsonb only, with no paths: the registry's loader checks paths.
        return p;
    }
    let rule = match rule_of(
        &rule_name,
        p.domain.as_deref(),
        p.kind.as_deref(),
        p.mode.as_deref(),
        &p.with,
    ) {
        Some(r) => r,
        None => {
            p.notes
                .push(format!("needs review: rule {rule_name} has no form here"));
            p.class = "blocked".into();
            p.rule = None;
            p.domain = None;
            p.kind = None;
            return p;
        }
    };
    let fits = rule_fits(&rule, Profile::SafeHarbor, class, info, column, scanner);
    if let Err(why) = fits {
        p.notes.push(format!("needs review: {why}"));
        p.class = "blocked".into();
        p.rule = None;
        p.domain = None;
        p.kind = None;
        p.confidence = "low".into();
    }
    p
}

/// Whether a rule can work on a column: the gate's own binding for the column's type, and, on a
/// primary-key, unique or foreign-key column, a rule that keeps distinct values distinct.
pub fn rule_fits(
    rule: &Rule,
    profile: Profile,
    class: Option<&TypeClass>,
    info: &TableInfo,
    column: &str,
    scanner: &std::sync::Arc<Scanner>,
) -> Result<(), String> {
    let Some(class) = class else {
        return Err("veil does not publish this type: only `blocked` fits".into());
    };
    // Binding checks only that the rule applies to the type: any key will do.
    let master = MasterKey::new([0; 32]);
    let zips = std::sync::Arc::new(Vec::new());
    let index = |c: &str| info.columns.iter().position(|x| x.name == c);
    RuleKey::bind(
        rule,
        class,
        &BindCx {
            master: &master,
            profile,
            column_index: &index,
            scanner,
            restricted_zip3: &zips,
        },
    )
    .map_err(|e| e.to_string())?;
    let key = info.primary_key.iter().any(|k| k == column)
        || info
            .unique_keys
            .iter()
            .any(|(_, cols)| cols.iter().any(|c| c == column))
        || info
            .foreign_keys
            .iter()
            .any(|fk| fk.columns.iter().any(|c| c == column));
    if key {
        let merges = match rule {
            // Tokens are unique in their domain (numeric ones in canonical form, so distinct
            // tokens are distinct numbers).
            Rule::Keep
            | Rule::Ssn { .. }
            | Rule::Email { .. }
            | Rule::Tokenize { .. }
            | Rule::DateToken { .. } => false,
            _ => true,
        };
        if merges {
            return Err(format!(
                "the column is part of a primary key, unique key or foreign key, and rule {} \
                 does not keep distinct values distinct (use tokenize)",
                rule.describe()
            ));
        }
    }
    Ok(())
}

/// The registry rule a proposal names.
fn rule_of(
    rule: &str,
    domain: Option<&str>,
    kind: Option<&str>,
    mode: Option<&str>,
    with: &[String],
) -> Option<Rule> {
    let domain = || domain.map(str::to_owned);
    Some(match rule {
        "tokenize" => Rule::Tokenize { domain: domain()? },
        "date_token" => Rule::DateToken {
            domain: domain()?,
            with: with.to_vec(),
        },
        "ssn" => Rule::Ssn { domain: domain()? },
        "email" => Rule::Email { domain: domain()? },
        "surrogate" => Rule::Surrogate {
            domain: domain()?,
            kind: match kind.unwrap_or("name") {
                "given_name" => SurrogateKind::GivenName,
                "family_name" => SurrogateKind::FamilyName,
                "street" => SurrogateKind::Street,
                "city" => SurrogateKind::City,
                _ => SurrogateKind::Name,
            },
        },
        "year_only" => Rule::YearOnly,
        "zip3" => Rule::Zip3,
        "scrub" => Rule::Scrub { replacement: None },
        "redact" => Rule::Redact {
            whole: mode == Some("whole"),
        },
        "age_cap" => Rule::AgeCap,
        _ => return None,
    })
}

/// Samples a column: up to [`SAMPLE_ROWS`] non-null values as text.
pub async fn sample(
    client: &tokio_postgres::Client,
    info: &TableInfo,
    column: &str,
) -> Result<Vec<String>, ReviewError> {
    let sql = format!(
        "SELECT {c}::text FROM {s}.{t} WHERE {c} IS NOT NULL LIMIT {SAMPLE_ROWS}",
        c = crate::pg::quote::ident(column),
        s = crate::pg::quote::ident(&info.schema),
        t = crate::pg::quote::ident(&info.name)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| ReviewError::Postgres(crate::pg::errors::PgError::new("sample column", &e)))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether every sampled value of an undeclared reference is in the referenced key.
pub async fn contained_in(
    client: &tokio_postgres::Client,
    values: &[String],
    target: &TableInfo,
    key: &str,
) -> Result<bool, ReviewError> {
    if values.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "SELECT count(*) FROM unnest($1::text[]) AS v(x) WHERE NOT EXISTS \
         (SELECT 1 FROM {s}.{t} k WHERE k.{c}::text = v.x)",
        s = crate::pg::quote::ident(&target.schema),
        t = crate::pg::quote::ident(&target.name),
        c = crate::pg::quote::ident(key)
    );
    let missing: i64 = client
        .query_one(&sql, &[&values])
        .await
        .map_err(|e| {
            ReviewError::Postgres(crate::pg::errors::PgError::new("check a reference", &e))
        })?
        .get(0);
    Ok(missing == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> TableInfo {
        TableInfo {
            oid: 1,
            schema: "public".into(),
            name: name.into(),
            replica_identity: b'd',
            columns: Vec::new(),
            primary_key: Vec::new(),
            identity_index: Vec::new(),
            unique_keys: Vec::new(),
            foreign_keys: Vec::new(),
            enums: Default::default(),
            history: Default::default(),
        }
    }

    fn proposal(table_name: &str, column: &str, class: TypeClass, sample: &[String]) -> Proposal {
        let info = table(table_name);
        let f = ColumnFacts {
            info: &info,
            column,
            class: Some(&class),
            sample,
            key_domain: None,
            key_with: Vec::new(),
            key_part_only: false,
            lookup: false,
        };
        propose(&Scanner::standard(), &f)
    }

    fn many(f: impl Fn(usize) -> String) -> Vec<String> {
        (0..200).map(f).collect()
    }

    #[test]
    fn ages_are_capped_initials_scrubbed() {
        let ages = many(|i| (20 + i % 80).to_string());
        let p = proposal("person", "age_years", TypeClass::Int4, &ages);
        assert_eq!(
            (p.class.as_str(), p.rule.as_deref()),
            ("sensitive", Some("age_cap"))
        );
        let initials = many(|i| ((b'A' + (i % 26) as u8) as char).to_string());
        let p = proposal("person", "middle_initial", TypeClass::Text, &initials);
        assert_eq!(p.rule.as_deref(), Some("scrub"), "{p:?}");
    }

    #[test]
    fn free_text_is_redacted_whole_short_names_replaced() {
        let given = ["Mary", "John", "Aiko", "Pedro", "Olga", "Wei"];
        let family = ["Smith", "Garcia", "Tanaka", "Ivanova", "Nguyen", "Okafor"];
        let notes = many(|i| {
            format!(
                "Spoke with daughter {} {} about the plan; reachable at (617) 555-{:04}. \
                 Follow up in two weeks.",
                given[i % 6],
                family[(i / 6) % 6],
                i
            )
        });
        let p = proposal("visit", "remarks", TypeClass::Text, &notes);
        assert_eq!(
            (p.rule.as_deref(), p.mode.as_deref()),
            (Some("redact"), Some("whole")),
            "{p:?}"
        );
        let shown = many(|i| format!("{} {}", given[i % 6], family[(i / 6) % 6]));
        let p = proposal("member", "shown_as", TypeClass::Text, &shown);
        assert_ne!(p.class, "safe", "{p:?}");
        assert_ne!(p.rule.as_deref(), Some("redact"), "{p:?}");
    }

    #[test]
    fn a_safe_proposal_the_scanner_would_hold_on_is_explained_or_blocked() {
        let phones = many(|i| format!("(617) 555-{:04}", 1000 + i));
        // An organisation's phone: safe, not sampled in flight, and the note says why.
        let p = proposal("organizations", "phone", TypeClass::Text, &phones);
        assert_eq!((p.class.as_str(), p.scan), ("safe", Some(false)), "{p:?}");
        assert!(p.notes.iter().any(|n| n.contains("scan = false")));
        // Nothing explains phone shapes in a column nothing else calls safe: never safe.
        let p = proposal("visit", "kind_label", TypeClass::Text, &phones);
        assert_ne!(p.class, "safe", "{p:?}");
        assert_eq!(p.scan, None);
    }

    #[test]
    fn udis_and_coordinates_without_a_name_hint() {
        let udis = many(|i| format!("+H{:03}AB{:03}/$$2612ABC{:03}", i % 900, i, i));
        let p = proposal("item", "v1", TypeClass::Text, &udis);
        assert_eq!(
            (p.identifier_class.as_deref(), p.rule.as_deref()),
            (Some("device"), Some("tokenize")),
            "{p:?}"
        );
        let degrees = many(|i| format!("{:.6}", 42.1 + i as f64 * 0.00731));
        for class in [TypeClass::Float8, TypeClass::Numeric, TypeClass::Text] {
            let p = proposal("item", "v2", class.clone(), &degrees);
            assert_eq!(
                (p.identifier_class.as_deref(), p.rule.as_deref()),
                (Some("geography"), Some("scrub")),
                "{class:?}: {p:?}"
            );
        }
    }

    #[test]
    fn json_names_only_structural_paths_and_never_a_key_that_is_data() {
        let people = [
            "Jane Doe",
            "山田 太郎",
            "Olga Ivanova",
            "Pedro Alves",
            "Wei Chen",
        ];
        let docs = many(|i| {
            format!(
                "{{\"theme\": \"{}\", \"emergency_contacts\": {{\"{}\": {{\"phone\": \"617-555-{:04}\"}}}}, \"pharmacy\": \"Store {}\", \"n\": {{\"a\": {i}}}}}",
                ["light", "dark"][i % 2],
                people[i % 5],
                i,
                i
            )
        });
        let p = proposal("preference", "profile", TypeClass::Jsonb, &docs);
        assert_eq!(p.rule.as_deref(), Some("json"));
        let got: Vec<(&str, &str)> = p
            .paths
            .iter()
            .map(|x| (x.path.as_str(), x.rule.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("$.emergency_contacts", "scrub"),
                ("$.n.a", "scrub"),
                ("$.pharmacy", "scrub"),
                ("$.theme", "keep"),
            ]
        );
        let printed = serde_json::to_string(&p).unwrap();
        for name in people {
            assert!(!printed.contains(name));
        }
        // Too few documents: no path at all.
        let p = proposal("preference", "profile", TypeClass::Jsonb, &docs[..5]);
        assert!(p.paths.is_empty());
    }
}
