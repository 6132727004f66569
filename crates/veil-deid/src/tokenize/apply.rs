//! Rules bound to their keys ([`RuleKey`]) and applied to one value ([`apply`]), including
//! `json` path rules.

use super::dates::*;
use super::keys::*;
use super::store::{NullStore, TokenStore};
use super::text::*;
use crate::pg::catalog::TypeClass;
use crate::registry::{PathSeg, Profile, Rule, json_key_domain, parse_path};
use crate::scanner::Scanner;
use std::sync::Arc;

/// What one row's transform needs besides the rule: the token store, where to record misses,
/// and the row's source values (for `date_shift`'s entity column).
pub struct Cx<'a> {
    pub store: &'a dyn TokenStore,
    pub misses: &'a mut Vec<VaultRequest>,
    pub row: &'a [Option<&'a str>],
}

/// A rule bound to its key material, ready for the hot path.
#[derive(Debug, Clone)]
pub enum RuleKey {
    Keep,
    /// Expert-determination integers: keyed permutation, invertible with the key.
    IntPerm(DomainKey),
    Vault(Arc<VaultRule>),
    /// `date_token`: a vault token per whole key tuple — the rule's domain narrowed to the
    /// values of the `with` columns (by index), so dates are unique among tuples that share them.
    DateToken {
        base: Arc<VaultRule>,
        with: Vec<usize>,
    },
    DateShift {
        key: DomainKey,
        entity: usize,
        max_days: u32,
        fallback: DomainKey,
    },
    Scrub(Option<String>),
    YearOnly,
    /// The restricted three-digit prefixes (the registry's data).
    Zip3(Arc<Vec<String>>),
    AgeCap,
    Redact {
        whole: bool,
        scanner: Arc<Scanner>,
    },
    Json(Arc<JsonRules>),
}

/// Rules applied to paths inside a JSON value.
#[derive(Debug)]
pub struct JsonRules {
    pub paths: Vec<(Vec<PathSeg>, RuleKey)>,
    /// Leaves no path names: kept, or replaced by JSON null (the default, fail closed).
    pub keep_others: bool,
    /// How object keys that no path names literally are replaced (a text token, consistent in
    /// [`json_key_domain`]); `None`: keys kept (`keys = "keep"`).
    pub key_rule: Option<RuleKey>,
}

impl JsonRules {
    /// True when some path names `key` literally at the position `at` (the parent's steps):
    /// the reviewer wrote it, so it is structure, not data.
    fn names_key(&self, at: &[Step], key: &str) -> bool {
        self.paths.iter().any(|(p, _)| {
            p.len() > at.len()
                && matches!(&p[at.len()], PathSeg::Key(k) if k == key)
                && path_matches(&p[..at.len()], at)
        })
    }
}

pub(super) enum Step {
    Key(String),
    Index,
}

pub(super) fn path_matches(rule: &[PathSeg], at: &[Step]) -> bool {
    rule.len() <= at.len()
        && rule.iter().zip(at).all(|(r, s)| match (r, s) {
            (PathSeg::Key(k), Step::Key(a)) => k == a,
            (PathSeg::AnyKey, Step::Key(_)) => true,
            (PathSeg::AnyIndex, Step::Index) => true,
            _ => false,
        })
}

pub(super) fn int_bits(class: &TypeClass) -> u32 {
    match class {
        TypeClass::Int2 => 15,
        TypeClass::Int4 => 31,
        _ => 63,
    }
}

/// Applies a bound rule to one non-null text value of the given type. `Ok(None)` is SQL NULL.
/// On a vault miss the request is recorded in `cx.misses` and a placeholder returned: the caller
/// must allocate and transform the row again.
pub fn apply(
    rule: &RuleKey,
    class: &TypeClass,
    value: &str,
    cx: &mut Cx,
) -> Result<Option<String>, DeidError> {
    Ok(Some(match rule {
        RuleKey::Keep => value.to_owned(),
        RuleKey::Scrub(r) => return Ok(r.clone()),
        RuleKey::IntPerm(key) => {
            let bits = int_bits(class);
            match value.trim().parse::<i64>() {
                Ok(v) => key.permute_int(v, bits).to_string(),
                // Cannot happen for a real integer column; never pass the value through.
                Err(_) => key.permute_int(0, bits).to_string(),
            }
        }
        RuleKey::Vault(v) => {
            let normalized;
            let value = match v.kind {
                TokenKind::Uuid => {
                    normalized = value.trim().to_ascii_lowercase();
                    normalized.as_str()
                }
                // One number, one token: `42.0` and `42` are equal keys. NaN and the
                // infinities identify no one and have no digits to replace.
                TokenKind::Numeric => match canonical_numeric(value) {
                    Some(c) => {
                        normalized = c;
                        normalized.as_str()
                    }
                    None => return Ok(Some(value.to_owned())),
                },
                _ => value,
            };
            let hash = v.key.value_hash(value);
            match cx.store.get(&v.domain, &hash) {
                Some(t) => t.to_string(),
                None => {
                    cx.misses.push(VaultRequest {
                        rule: v.clone(),
                        hash,
                        value: value.to_owned(),
                    });
                    String::new()
                }
            }
        }
        RuleKey::DateToken { base, with } => {
            // The tuple's other values narrow the domain: a tuple's date is unique among the
            // tuples that share them, and a foreign key naming the same tuple finds it.
            let mut scope = blake3::Hasher::new();
            for &i in with {
                match cx.row.get(i).copied().flatten() {
                    Some(v) => scope.update(&[1]).update(v.as_bytes()),
                    None => scope.update(&[0]),
                };
                scope.update(&[0x1f]);
            }
            let scope = base.key.value_hash(&scope.finalize().to_hex());
            let scope = hex::encode(&scope[..8]);
            let domain = format!("{}@{scope}", base.domain);
            // The hash names the whole tuple (caches and the vault find a token by hash): the
            // same date in two tuples is two values.
            let hash = base
                .key
                .value_hash(&format!("{scope}\u{0}{}", value.trim()));
            match cx.store.get(&domain, &hash) {
                Some(t) => t.to_string(),
                None => {
                    cx.misses.push(VaultRequest {
                        rule: Arc::new(VaultRule {
                            domain: domain.into(),
                            kind: base.kind,
                            key: base.key.clone(),
                            random: base.random,
                        }),
                        hash,
                        value: value.trim().to_owned(),
                    });
                    String::new()
                }
            }
        }
        RuleKey::DateShift {
            key,
            entity,
            max_days,
            fallback,
        } => {
            let entity_value = cx.row.get(*entity).copied().flatten().unwrap_or("");
            let days = shift_days(key, entity_value, *max_days);
            match shift_date_text(value, days) {
                Some(s) => s,
                None if value.ends_with("infinity") => value.to_owned(),
                None => fallback_date(fallback, value, class)?,
            }
        }
        RuleKey::YearOnly => {
            let year: String = value.chars().take_while(|c| *c != '-').collect();
            let bc = value.ends_with(" BC");
            let valid_year = !year.is_empty() && year.chars().all(|c| c.is_ascii_digit());
            if value.ends_with("infinity") {
                return Ok(Some(value.to_owned()));
            }
            let year = if valid_year { year } else { "1900".into() };
            let bc = if bc { " BC" } else { "" };
            match class {
                TypeClass::Date => format!("{year}-01-01{bc}"),
                TypeClass::Timestamp => format!("{year}-01-01 00:00:00{bc}"),
                TypeClass::Timestamptz => format!("{year}-01-01 00:00:00+00{bc}"),
                other => return Err(not_applicable("year_only", other)),
            }
        }
        RuleKey::Zip3(restricted) => match class {
            TypeClass::Text => zip3_with(value, restricted),
            other => return Err(not_applicable("zip3", other)),
        },
        RuleKey::AgeCap => match class {
            TypeClass::Int2 | TypeClass::Int4 | TypeClass::Int8 | TypeClass::Numeric => {
                match value.trim().parse::<f64>() {
                    Ok(a) if a > 89.0 => "90".into(),
                    Ok(_) => value.to_owned(),
                    Err(_) => "90".into(),
                }
            }
            other => return Err(not_applicable("age_cap", other)),
        },
        RuleKey::Redact { whole, scanner } => match class {
            TypeClass::Text => {
                if *whole {
                    "[REDACTED]".into()
                } else {
                    scanner.redact(value)
                }
            }
            other => return Err(not_applicable("redact", other)),
        },
        RuleKey::Json(rules) => match class {
            TypeClass::Json | TypeClass::Jsonb => {
                let mut doc: serde_json::Value =
                    serde_json::from_str(value).map_err(|_| DeidError::NotJson)?;
                let mut at = Vec::new();
                json_walk(&mut doc, &mut at, rules, cx)?;
                doc.to_string()
            }
            other => return Err(not_applicable("json", other)),
        },
    }))
}

pub(super) fn json_walk(
    v: &mut serde_json::Value,
    at: &mut Vec<Step>,
    rules: &JsonRules,
    cx: &mut Cx,
) -> Result<(), DeidError> {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, mut child) in std::mem::take(map) {
                at.push(Step::Key(k.clone()));
                json_walk(&mut child, at, rules, cx)?;
                at.pop();
                let key = match &rules.key_rule {
                    Some(r) if !rules.names_key(at, &k) => {
                        apply(r, &TypeClass::Text, &k, cx)?.unwrap_or_default()
                    }
                    _ => k,
                };
                out.insert(key, child);
            }
            *map = out;
            Ok(())
        }
        J::Array(items) => {
            for item in items {
                at.push(Step::Index);
                json_walk(item, at, rules, cx)?;
                at.pop();
            }
            Ok(())
        }
        J::Null => Ok(()),
        leaf => {
            let rule = rules
                .paths
                .iter()
                .find(|(p, _)| path_matches(p, at))
                .map(|(_, r)| r);
            match rule {
                None if rules.keep_others => {}
                None => *leaf = J::Null,
                Some(r) => {
                    let (text, class) = match leaf {
                        J::String(s) => (s.clone(), TypeClass::Text),
                        J::Number(n) => (
                            n.to_string(),
                            if n.is_i64() {
                                TypeClass::Int8
                            } else {
                                TypeClass::Numeric
                            },
                        ),
                        J::Bool(b) => (b.to_string(), TypeClass::Text),
                        _ => return Ok(()),
                    };
                    let class = match (r, &class) {
                        // Rules that only know text see numbers as text.
                        (RuleKey::Vault(_) | RuleKey::Redact { .. } | RuleKey::Zip3(_), _) => {
                            if matches!(leaf, J::Number(_)) {
                                TypeClass::Numeric
                            } else {
                                TypeClass::Text
                            }
                        }
                        _ => class,
                    };
                    let out = apply(r, &class, &text, cx)?;
                    *leaf = match (out, &*leaf) {
                        (None, _) => J::Null,
                        (Some(s), J::Number(_)) => serde_json::from_str::<serde_json::Number>(&s)
                            .map(J::Number)
                            .unwrap_or(J::String(s)),
                        (Some(s), _) => J::String(s),
                    };
                }
            }
            Ok(())
        }
    }
}

pub struct BindCx<'a> {
    pub master: &'a MasterKey,
    pub profile: Profile,
    /// Position of a column of the same table (for `date_shift`'s entity).
    pub column_index: &'a dyn Fn(&str) -> Option<usize>,
    pub scanner: &'a Arc<Scanner>,
    /// Restricted three-digit ZIP prefixes (`zip3` maps them to `000`).
    pub restricted_zip3: &'a Arc<Vec<String>>,
}

impl RuleKey {
    /// Binds a registry rule to keys and checks that it applies to the column type.
    pub fn bind(rule: &Rule, class: &TypeClass, cx: &BindCx) -> Result<Self, DeidError> {
        let random = cx.profile == Profile::SafeHarbor;
        let vault = |domain: &str, kind: TokenKind| {
            RuleKey::Vault(Arc::new(VaultRule {
                domain: domain.into(),
                kind,
                key: cx.master.domain_key(domain),
                random,
            }))
        };
        let bound = match rule {
            Rule::Keep => RuleKey::Keep,
            Rule::Tokenize { domain } => match class {
                TypeClass::Int2 | TypeClass::Int4 | TypeClass::Int8 => {
                    if random {
                        vault(
                            domain,
                            TokenKind::Int {
                                bits: int_bits(class),
                            },
                        )
                    } else {
                        RuleKey::IntPerm(cx.master.domain_key(domain))
                    }
                }
                TypeClass::Text => vault(domain, TokenKind::Text),
                TypeClass::Numeric => vault(domain, TokenKind::Numeric),
                TypeClass::Uuid => vault(domain, TokenKind::Uuid),
                TypeClass::Bytea => vault(domain, TokenKind::Bytea),
                other => return Err(not_applicable("tokenize", other)),
            },
            Rule::DateToken { domain, with } => {
                let time = match class {
                    TypeClass::Date => false,
                    TypeClass::Timestamp | TypeClass::Timestamptz => true,
                    other => return Err(not_applicable("date_token", other)),
                };
                let with = with
                    .iter()
                    .map(|c| {
                        (cx.column_index)(c)
                            .ok_or_else(|| DeidError::NoEntity { entity: c.clone() })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                RuleKey::DateToken {
                    base: Arc::new(VaultRule {
                        domain: domain.as_str().into(),
                        kind: TokenKind::Date { time },
                        key: cx.master.domain_key(domain),
                        random,
                    }),
                    with,
                }
            }
            Rule::Ssn { domain } => text_only("ssn", class, vault(domain, TokenKind::Ssn))?,
            Rule::Email { domain } => text_only("email", class, vault(domain, TokenKind::Email))?,
            Rule::Surrogate { domain, kind } => text_only(
                "surrogate",
                class,
                vault(domain, TokenKind::Surrogate(*kind)),
            )?,
            Rule::DateShift {
                domain,
                entity,
                max_days,
            } => {
                let idx = (cx.column_index)(entity).ok_or_else(|| DeidError::NoEntity {
                    entity: entity.clone(),
                })?;
                RuleKey::DateShift {
                    key: cx.master.shift_key(domain),
                    entity: idx,
                    max_days: *max_days,
                    fallback: cx.master.fallback_key(),
                }
            }
            Rule::Scrub { replacement } => RuleKey::Scrub(replacement.clone()),
            Rule::YearOnly => RuleKey::YearOnly,
            Rule::Zip3 => RuleKey::Zip3(cx.restricted_zip3.clone()),
            Rule::AgeCap => RuleKey::AgeCap,
            Rule::Redact { whole } => RuleKey::Redact {
                whole: *whole,
                scanner: cx.scanner.clone(),
            },
            Rule::Json {
                paths,
                keep_others,
                keep_keys,
            } => {
                let mut bound = Vec::with_capacity(paths.len());
                for (path, r) in paths {
                    let segs = parse_path(path).map_err(|_| not_applicable("json", class))?;
                    // Leaves are strings or numbers: bind as text (numbers become numeric).
                    // Tokens of leaves are text tokens (a leaf may be a string or a number).
                    let leaf_class = match r {
                        Rule::Tokenize { .. } => TypeClass::Text,
                        Rule::AgeCap => TypeClass::Numeric,
                        Rule::DateShift { .. } | Rule::YearOnly => TypeClass::Date,
                        _ => TypeClass::Text,
                    };
                    bound.push((segs, RuleKey::bind(r, &leaf_class, cx)?));
                }
                let key_rule =
                    (!keep_keys).then(|| vault(json_key_domain(cx.profile), TokenKind::Text));
                RuleKey::Json(Arc::new(JsonRules {
                    paths: bound,
                    keep_others: *keep_others,
                    key_rule,
                }))
            }
        };
        // Probe with a harmless value so a rule/type mismatch is found at plan time.
        let probe = match class {
            TypeClass::Date | TypeClass::Timestamp | TypeClass::Timestamptz => "2000-01-01",
            TypeClass::Uuid => "00000000-0000-0000-0000-000000000000",
            TypeClass::Json | TypeClass::Jsonb => "{}",
            _ => "0",
        };
        let mut misses = Vec::new();
        let row = [];
        let mut pcx = Cx {
            store: &NullStore,
            misses: &mut misses,
            row: &row,
        };
        apply(&bound, class, probe, &mut pcx)?;
        Ok(bound)
    }

    /// True when the rule needs the vault.
    pub fn uses_vault(&self) -> bool {
        match self {
            RuleKey::Vault(_) | RuleKey::DateToken { .. } => true,
            RuleKey::Json(j) => {
                j.key_rule.as_ref().is_some_and(RuleKey::uses_vault)
                    || j.paths.iter().any(|(_, r)| r.uses_vault())
            }
            _ => false,
        }
    }
}

pub(super) fn text_only(
    rule: &str,
    class: &TypeClass,
    bound: RuleKey,
) -> Result<RuleKey, DeidError> {
    match class {
        TypeClass::Text => Ok(bound),
        other => Err(not_applicable(rule, other)),
    }
}
