use super::*;
use super::{apply::*, keys::*, text::*};
use crate::civil::{civil_from_days, days_from_civil};
use crate::pg::catalog::TypeClass;
use crate::registry::{PathSeg, Profile, RESTRICTED_ZIP3, Rule, SurrogateKind, parse_path};
use crate::scanner::Scanner;
use std::sync::Arc;

fn key() -> MasterKey {
    MasterKey::new([7; 32])
}

#[test]
fn siphash_matches_reference() {
    // SipHash-2-4 of an 8-byte message against the standard library's implementation; the
    // round function uses the same code with 1-3 rounds.
    let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
    let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
    for m in [0u64, 1, 0x0706_0504_0302_0100, u64::MAX] {
        #[allow(deprecated)]
        let expected = {
            use std::hash::Hasher;
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(&m.to_le_bytes());
            h.finish()
        };
        assert_eq!(siphash::<2, 4>(k0, k1, m), expected);
    }
    assert_ne!(sip13(k0, k1, 1), siphash::<2, 4>(k0, k1, 1));
}

/// The same construction on narrow widths, checked exhaustively (every value, up to 2^24).
#[test]
fn permutation_is_a_bijection_exhaustively_up_to_2_pow_24() {
    let k = key().domain_key("d");
    for bits in [2u32, 3, 7, 15, 16, 24] {
        let n = 1u64 << bits;
        let mut seen = vec![0u64; (n as usize).div_ceil(64)];
        for x in 0..n {
            let y = k.permute_bits(x, bits, 0);
            assert!(y < n, "out of range at width {bits}");
            let (w, b) = ((y / 64) as usize, y % 64);
            assert!(seen[w] & (1 << b) == 0, "collision at width {bits}, x={x}");
            seen[w] |= 1 << b;
            if x % 4099 == 0 {
                assert_eq!(k.unpermute_bits(y, bits, 0), x);
            }
        }
    }
    // Decimal cycle walking: all six-digit numbers.
    let mut seen = vec![false; 1_000_000];
    for x in 0..1_000_000u64 {
        let y = k.permute_decimal(x, 6, 42) as usize;
        assert!(!seen[y]);
        seen[y] = true;
    }
}

#[test]
fn ints_keep_sign_and_roundtrip() {
    let k = key().domain_key("patient");
    for v in [0i64, 1, -1, i32::MAX as i64, i32::MIN as i64, 123456] {
        let t = k.permute_int(v, 31);
        assert_eq!(t >= 0, v >= 0);
        assert!(t <= i32::MAX as i64 && t >= i32::MIN as i64);
        assert_eq!(k.unpermute_int(t, 31), v);
    }
    for v in [i64::MAX, i64::MIN, 42] {
        assert_eq!(k.unpermute_int(k.permute_int(v, 63), 63), v);
    }
}

#[test]
fn domains_are_separated_and_deterministic() {
    let a = key().domain_key("a");
    let b = key().domain_key("b");
    assert_ne!(a.permute_int(5, 63), b.permute_int(5, 63));
    assert_eq!(a.text("Alice"), key().domain_key("a").text("Alice"));
    assert_ne!(a.text("Alice"), b.text("Alice"));
    assert_ne!(a.text("Alice"), "Alice");
    assert_ne!(a.value_hash("x"), b.value_hash("x"));
    // Different master keys give unrelated tokens.
    let other = MasterKey::new([8; 32]).domain_key("a");
    assert_ne!(a.permute_int(5, 63), other.permute_int(5, 63));
}

fn vrule(kind: TokenKind, random: bool) -> VaultRule {
    VaultRule {
        domain: "d".into(),
        kind,
        key: key().domain_key("d"),
        random,
    }
}

#[test]
fn ssn_tokens_fall_in_never_issued_areas() {
    let scanner = crate::scanner::Scanner::standard();
    for random in [false, true] {
        let r = vrule(TokenKind::Ssn, random);
        for i in 0..2000 {
            let t = r.candidate(&format!("{:03}-45-{:04}", 100 + i % 500, i), 0);
            assert_eq!(t.len(), 11);
            assert_eq!((&t[3..4], &t[6..7]), ("-", "-"));
            let area: u32 = t[..3].parse().unwrap();
            assert!(area == 0 || area == 666 || area >= 900, "{t}");
            assert!(!scanner.detect(&t).contains(&crate::scanner::Detector::Ssn));
        }
        // Unparseable: a layout-keeping fallback, never the original.
        let t = r.candidate("12-34", 0);
        assert_eq!(t.len(), 5);
        assert_ne!(t, "12-34");
    }
    let plain = vrule(TokenKind::Ssn, false).candidate("123456789", 0);
    assert_eq!(plain.len(), 9);
}

#[test]
fn email_and_surrogates_keep_shape() {
    let e = vrule(TokenKind::Email, false).candidate("patient17.42@mail.example", 0);
    assert!(e.ends_with("@example.com"), "{e}");
    assert_eq!(e.split('@').next().unwrap().len(), "patient17.42".len());
    let j = vrule(TokenKind::Surrogate(SurrogateKind::Name), true).candidate("山田 太郎", 0);
    assert!(j.chars().all(
        |c| c == ' ' || crate::surrogate::char_script(c) == Some(crate::surrogate::Script::Han)
    ));
    let s = vrule(TokenKind::Surrogate(SurrogateKind::Street), false)
        .candidate("1234 Maple St Apt 7", 0);
    assert!(s.ends_with(" St Apt 7") || s.contains(" St Apt "), "{s}");
    assert!(!s.contains("Maple") && !s.starts_with("1234"), "{s}");
    let c = vrule(TokenKind::Surrogate(SurrogateKind::City), false).candidate("Boston", 0);
    assert_ne!(c, "Boston");
    assert_eq!(
        vrule(TokenKind::Surrogate(SurrogateKind::Name), false).candidate("", 0),
        ""
    );
}

#[test]
fn safe_harbor_candidates_are_not_derived_from_the_value() {
    let r = vrule(TokenKind::Int { bits: 31 }, true);
    let a: Vec<String> = (0..20).map(|_| r.candidate("17", 0)).collect();
    assert!(a.iter().any(|t| t != &a[0]));
    let k = vrule(TokenKind::Text, false);
    assert_eq!(k.candidate("MRN123", 0), k.candidate("MRN123", 0));
    assert_ne!(k.candidate("MRN123", 0), k.candidate("MRN123", 1));
}

#[test]
fn memory_store_allocates_unique_tokens() {
    let store = MemoryStore::default();
    let rule = Arc::new(vrule(TokenKind::Text, false));
    // 10 two-digit values only have 100 tokens: force clashes through a narrow layout.
    let reqs: Vec<VaultRequest> = (0..100)
        .map(|i| {
            let v = format!("{i:02}");
            VaultRequest {
                rule: rule.clone(),
                hash: rule.key.value_hash(&v),
                value: v,
            }
        })
        .collect();
    store.allocate(&reqs);
    let tokens: std::collections::HashSet<_> = reqs
        .iter()
        .map(|r| store.get("d", &r.hash).unwrap())
        .collect();
    assert_eq!(tokens.len(), 100);
}

#[test]
fn date_shift_keeps_intervals_per_entity() {
    let k = key().shift_key("patient_id");
    let d = shift_days(&k, "17", 180);
    assert!(d != 0 && d.abs() <= 180);
    let a = shift_date_text("2024-03-01", d).unwrap();
    let b = shift_date_text("2024-03-11 10:15:00+00", d).unwrap();
    let da = days_from_civil(
        a[..4].parse().unwrap(),
        a[5..7].parse().unwrap(),
        a[8..10].parse().unwrap(),
    );
    let db = days_from_civil(
        b[..4].parse().unwrap(),
        b[5..7].parse().unwrap(),
        b[8..10].parse().unwrap(),
    );
    assert_eq!(db - da, 10);
    assert!(b.ends_with(" 10:15:00+00"));
    assert_eq!(shift_date_text("2024-02-28", 1).unwrap(), "2024-02-29");
    assert_eq!(shift_date_text("0001-01-01", -1).unwrap(), "0001-12-31 BC");
    assert_eq!(
        shift_date_text("0044-03-15 BC", 1).unwrap(),
        "0044-03-16 BC"
    );
    assert_eq!(shift_date_text("infinity", 3), None);
    assert_eq!(shift_date_text("12345-01-01", 0).unwrap(), "12345-01-01");
    let mut ds = std::collections::HashSet::new();
    for e in 0..2000 {
        ds.insert(shift_days(&k, &e.to_string(), 180));
    }
    assert!(ds.len() > 300 && !ds.contains(&0));
}

fn cx_apply(rule: &RuleKey, class: &TypeClass, v: &str) -> Option<String> {
    cx_apply_in(&MemoryStore::default(), rule, class, v)
}

/// Applies a rule as the gate does: on vault misses, allocates them in `store` and applies again.
fn cx_apply_in(store: &MemoryStore, rule: &RuleKey, class: &TypeClass, v: &str) -> Option<String> {
    let row = [Some("17")];
    for _ in 0..2 {
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
    }
    unreachable!("allocated misses are hits")
}

/// Binds a rule as the gate does, with the test key; every entity column is column 0.
fn bind(rule: &Rule, class: &TypeClass, profile: Profile) -> RuleKey {
    let m = key();
    let scanner = Arc::new(Scanner::standard());
    let idx = |_: &str| Some(0usize);
    let bcx = BindCx {
        master: &m,
        profile,
        column_index: &idx,
        scanner: &scanner,
        restricted_zip3: &Arc::new(RESTRICTED_ZIP3.iter().map(|s| s.to_string()).collect()),
    };
    RuleKey::bind(rule, class, &bcx).unwrap()
}

#[test]
fn safe_harbor_rules() {
    assert_eq!(zip3("02139"), "021");
    assert_eq!(zip3("03601"), "000");
    assert_eq!(zip3("x"), "000");
    let r = cx_apply(&RuleKey::YearOnly, &TypeClass::Date, "1961-07-04");
    assert_eq!(r.as_deref(), Some("1961-01-01"));
    assert_eq!(
        cx_apply(&RuleKey::AgeCap, &TypeClass::Int4, "93").as_deref(),
        Some("90")
    );
    assert_eq!(
        cx_apply(&RuleKey::AgeCap, &TypeClass::Int4, "89").as_deref(),
        Some("89")
    );
}

#[test]
fn json_paths() {
    let rule = Rule::Json {
        paths: vec![
            (
                "$.name".into(),
                Rule::Surrogate {
                    domain: "person_name".into(),
                    kind: SurrogateKind::Name,
                },
            ),
            (
                "$.ids[*]".into(),
                Rule::Tokenize {
                    domain: "mrn".into(),
                },
            ),
            ("$.visit.note".into(), Rule::Redact { whole: false }),
            ("$.visit.code".into(), Rule::Keep),
        ],
        keep_others: false,
        keep_keys: false,
    };
    let bound = bind(&rule, &TypeClass::Jsonb, Profile::ExpertDetermination);
    let out = cx_apply(
        &bound,
        &TypeClass::Jsonb,
        r#"{"name": "Mary Smith", "ids": ["MRN10000013", 12345], "visit": {"note": "call (617) 555-0123", "code": "8867-4", "secret": "x"}, "n": null}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(v["name"], "Mary Smith");
    assert_eq!(v["name"].as_str().unwrap().split(' ').count(), 2);
    assert_ne!(v["ids"][0], "MRN10000013");
    assert!(
        v["ids"][0].as_str().unwrap().starts_with("MRN")
            || v["ids"][0].as_str().unwrap().len() == 11
    );
    assert!(v["ids"][1].is_number() && v["ids"][1] != 12345);
    assert_eq!(v["visit"]["note"], "call [PHONE]");
    assert_eq!(v["visit"]["code"], "8867-4");
    // Keys no path names are tokens (same length and layout), their leaves null.
    let visit = v["visit"].as_object().unwrap();
    assert_eq!(visit.len(), 3);
    assert!(!visit.contains_key("secret"));
    let other = visit.keys().find(|k| *k != "note" && *k != "code").unwrap();
    assert_eq!(other.len(), "secret".len());
    assert!(visit[other].is_null());
    assert!(v.get("n").is_none() && v.as_object().unwrap().len() == 4);
    let mut misses = Vec::new();
    let bad = apply(
        &bound,
        &TypeClass::Jsonb,
        "{not json",
        &mut Cx {
            store: &MemoryStore::default(),
            misses: &mut misses,
            row: &[],
        },
    );
    assert_eq!(bad, Err(DeidError::NotJson));
    assert!(parse_path("name").is_err());
    assert_eq!(
        parse_path("$.a[*].*").unwrap(),
        vec![PathSeg::Key("a".into()), PathSeg::AnyIndex, PathSeg::AnyKey]
    );
}

#[test]
fn json_keys_are_data_unless_a_path_names_them() {
    let doc = r#"{"contacts":{"Jane Doe":{"ssn":"123-45-6789","phone":"617-555-0100"},"山田 太郎":{"ssn":"078-05-1120"}},"kind":"family"}"#;
    let rule = |paths: Vec<(String, Rule)>, keep_keys| Rule::Json {
        paths,
        keep_others: false,
        keep_keys,
    };
    // Default: every key no path names is replaced; the same key gets the same token.
    let bound = bind(&rule(vec![], false), &TypeClass::Jsonb, Profile::SafeHarbor);
    let out = cx_apply(&bound, &TypeClass::Jsonb, doc).unwrap();
    for word in [
        "Jane", "山田", "contacts", "ssn", "phone", "kind", "family", "123-45",
    ] {
        assert!(!out.contains(word), "{word} travelled: {out}");
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let top = v.as_object().unwrap();
    assert_eq!(top.len(), 2);
    let contacts = top
        .values()
        .find(|c| c.is_object())
        .unwrap()
        .as_object()
        .unwrap();
    assert_eq!(contacts.len(), 2, "two people stay two keys: {out}");
    assert!(
        contacts
            .keys()
            .any(|k| k.chars().count() == "山田 太郎".chars().count())
    );
    // Same store, same key, same token: documents keep a common shape.
    let store = MemoryStore::default();
    let run = |d: &str| cx_apply_in(&store, &bound, &TypeClass::Jsonb, d).unwrap();
    let a: serde_json::Value = serde_json::from_str(&run(r#"{"kind":"a","x":1}"#)).unwrap();
    let b: serde_json::Value = serde_json::from_str(&run(r#"{"kind":"b"}"#)).unwrap();
    let bk: Vec<&String> = b.as_object().unwrap().keys().collect();
    assert!(a.as_object().unwrap().contains_key(bk[0].as_str()));
    // Keys a path names literally travel; the wildcard names none.
    let named = rule(
        vec![
            (
                "$.contacts.*.ssn".into(),
                Rule::Ssn {
                    domain: "ssn".into(),
                },
            ),
            ("$.kind".into(), Rule::Keep),
        ],
        false,
    );
    let bound = bind(&named, &TypeClass::Jsonb, Profile::SafeHarbor);
    let out = cx_apply(&bound, &TypeClass::Jsonb, doc).unwrap();
    assert!(
        out.contains("\"contacts\"") && out.contains("\"kind\":\"family\""),
        "{out}"
    );
    assert!(out.contains("\"ssn\""), "{out}");
    for word in ["Jane", "山田", "phone", "123-45", "078-05"] {
        assert!(!out.contains(word), "{word} travelled: {out}");
    }
    // keys = "keep": the reviewer says keys are structure.
    let bound = bind(&rule(vec![], true), &TypeClass::Jsonb, Profile::SafeHarbor);
    let out = cx_apply(&bound, &TypeClass::Jsonb, doc).unwrap();
    assert!(out.contains("Jane Doe") && !out.contains("123-45"));
}

#[test]
fn a_token_is_never_its_own_value() {
    for random in [true, false] {
        for kind in [
            TokenKind::Int { bits: 15 },
            TokenKind::Text,
            TokenKind::Numeric,
        ] {
            let r = vrule(kind, random);
            for v in 0..3000 {
                let v = v.to_string();
                assert_ne!(r.candidate(&v, 0), v, "{kind:?}");
            }
        }
    }
}

#[test]
fn numeric_tokens_are_canonical_numbers() {
    use super::text::canonical_numeric;
    assert_eq!(canonical_numeric("0042.500").as_deref(), Some("42.5"));
    assert_eq!(canonical_numeric("-0.00").as_deref(), Some("0"));
    assert_eq!(canonical_numeric("7").as_deref(), Some("7"));
    assert_eq!(canonical_numeric("NaN"), None);
    assert_eq!(canonical_numeric("-Infinity"), None);
    // Random and keyed candidates: never a leading zero, never a trailing zero after the point,
    // so two distinct tokens are two distinct numbers.
    for random in [true, false] {
        let r = vrule(TokenKind::Numeric, random);
        for v in ["10", "123456789012", "-4500.25", "0.5", "99.01"] {
            for attempt in 0..200 {
                let t = r.candidate(v, attempt);
                let c = canonical_numeric(&t).unwrap();
                assert_eq!(c, t.trim_start_matches('+'), "{v} → {t}");
                assert_eq!(t.len(), v.len(), "{v} → {t}");
            }
        }
    }
    // Equal numbers, one token; NaN stays NaN.
    let rule = bind(
        &Rule::Tokenize {
            domain: "acct".into(),
        },
        &TypeClass::Numeric,
        Profile::SafeHarbor,
    );
    let store = MemoryStore::default();
    let run = |v: &str| cx_apply_in(&store, &rule, &TypeClass::Numeric, v).unwrap();
    assert_eq!(run("42"), run("42.00"));
    assert_ne!(run("42"), "42");
    assert_eq!(run("NaN"), "NaN");
}

proptest::proptest! {
    #[test]
    fn int_permutation_roundtrips_on_full_ranges(v in proptest::num::i64::ANY, w in proptest::num::i32::ANY, s in proptest::num::i16::ANY) {
        let k = MasterKey::new([3; 32]).domain_key("p");
        proptest::prop_assert_eq!(k.unpermute_int(k.permute_int(v, 63), 63), v);
        let t = k.permute_int(w as i64, 31);
        proptest::prop_assert!(t >= i32::MIN as i64 && t <= i32::MAX as i64);
        proptest::prop_assert_eq!(k.unpermute_int(t, 31), w as i64);
        let t = k.permute_int(s as i64, 15);
        proptest::prop_assert!(t >= i16::MIN as i64 && t <= i16::MAX as i64);
        proptest::prop_assert_eq!(k.unpermute_int(t, 15), s as i64);
    }

    #[test]
    fn text_tokens_keep_length_and_never_echo(s in "\\PC{1,40}") {
        let k = MasterKey::new([4; 32]).domain_key("t");
        let t = k.text(&s);
        proptest::prop_assert_eq!(t.chars().count(), s.chars().count());
        if s.chars().filter(|c| c.is_alphanumeric()).count() >= 6 {
            proptest::prop_assert_ne!(t, s);
        }
    }

    #[test]
    fn date_shift_is_a_bijection_per_offset(days in -400_000i64..400_000, off in -180i64..=180) {
        let (y, m, d) = civil_from_days(days);
        let s = if y <= 0 { format!("{:04}-{m:02}-{d:02} BC", 1 - y) } else { format!("{y:04}-{m:02}-{d:02}") };
        let shifted = shift_date_text(&s, off).unwrap();
        proptest::prop_assert_eq!(shift_date_text(&shifted, -off).unwrap(), s);
    }
}

#[test]
fn tokenize_rejects_inapplicable_types() {
    let m = key();
    let scanner = Arc::new(Scanner::standard());
    let idx = |_: &str| None;
    let bcx = BindCx {
        master: &m,
        profile: Profile::SafeHarbor,
        column_index: &idx,
        scanner: &scanner,
        restricted_zip3: &Arc::new(RESTRICTED_ZIP3.iter().map(|s| s.to_string()).collect()),
    };
    let rule = Rule::Tokenize { domain: "x".into() };
    assert!(RuleKey::bind(&rule, &TypeClass::Jsonb, &bcx).is_err());
    assert!(RuleKey::bind(&rule, &TypeClass::Int8, &bcx).is_ok());
    let shift = Rule::DateShift {
        domain: "p".into(),
        entity: "nope".into(),
        max_days: 180,
    };
    assert_eq!(
        RuleKey::bind(&shift, &TypeClass::Date, &bcx).unwrap_err(),
        DeidError::NoEntity {
            entity: "nope".into()
        }
    );
}

/// `date_token`: the year stays, the day is drawn; one tuple, one date (a reference naming the
/// same tuple finds it); the same date in two tuples gets two draws; within one tuple's scope
/// distinct dates stay distinct.
#[test]
fn date_tokens_keep_the_year_and_are_per_tuple() {
    let rule = Rule::DateToken {
        domain: "claim_date".into(),
        with: vec!["clm_id".into()],
    };
    let bound = bind(&rule, &TypeClass::Date, Profile::SafeHarbor);
    let store = MemoryStore::default();
    let apply_in = |scope: &str, v: &str| {
        let row = [Some(scope)];
        for _ in 0..2 {
            let mut misses = Vec::new();
            let out = apply(
                &bound,
                &TypeClass::Date,
                v,
                &mut Cx {
                    store: &store,
                    misses: &mut misses,
                    row: &row,
                },
            )
            .unwrap();
            if misses.is_empty() {
                return out.unwrap();
            }
            store.allocate(&misses);
        }
        unreachable!()
    };
    let a = apply_in("1", "2021-03-04");
    assert_eq!(&a[..5], "2021-");
    assert_eq!(apply_in("1", "2021-03-04"), a, "one tuple, one date");
    let mut others = std::collections::HashSet::new();
    for scope in 2..60 {
        others.insert(apply_in(&scope.to_string(), "2021-03-04"));
    }
    assert!(
        others.len() > 40,
        "the same date in other tuples: {} draws",
        others.len()
    );
    let mut days = std::collections::HashSet::new();
    for d in 0..200 {
        let v = format!("2020-{:02}-{:02}", d % 12 + 1, d % 28 + 1);
        let t = apply_in("7", &v);
        assert!(t.starts_with("2020-"));
        days.insert((v, t));
    }
    let tokens: std::collections::HashSet<&String> = days.iter().map(|(_, t)| t).collect();
    let values: std::collections::HashSet<&String> = days.iter().map(|(v, _)| v).collect();
    assert_eq!(
        tokens.len(),
        values.len(),
        "distinct dates stay distinct in a tuple's scope"
    );
    let ts = bind(&rule, &TypeClass::Timestamptz, Profile::SafeHarbor);
    let row = [Some("1")];
    let mut misses = Vec::new();
    let _ = apply(
        &ts,
        &TypeClass::Timestamptz,
        "2019-05-06 07:08:09.123+00",
        &mut Cx {
            store: &store,
            misses: &mut misses,
            row: &row,
        },
    );
    store.allocate(&misses);
    let mut misses = Vec::new();
    let t = apply(
        &ts,
        &TypeClass::Timestamptz,
        "2019-05-06 07:08:09.123+00",
        &mut Cx {
            store: &store,
            misses: &mut misses,
            row: &row,
        },
    )
    .unwrap()
    .unwrap();
    assert!(
        t.starts_with("2019-") && t.ends_with("+00") && t.len() == 22,
        "{t}"
    );
    assert_eq!(apply_in("1", "infinity"), "infinity");
}
