//! Token candidates for text-like values: layout-keeping shapes, SSNs in never-issued areas,
//! e-mails on example.com, surrogates, UUIDs and bytea; the vault rule that allocates them and the
//! request a vault miss produces.

use super::keys::*;
use crate::registry::SurrogateKind;
use crate::surrogate::{self, Part};
use std::sync::Arc;

/// The form of a vault-held token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An integer of `bits + 1` bits, same sign (Safe Harbor ids).
    Int {
        bits: u32,
    },
    /// Layout-keeping text.
    Text,
    /// A `numeric`: layout-keeping digits in canonical form (no leading zero, no trailing zero
    /// after the point), so distinct tokens are distinct numbers and keys stay keys.
    Numeric,
    Ssn,
    Email,
    Uuid,
    Bytea,
    Surrogate(SurrogateKind),
    /// A date (`time`: a timestamp) in the same year as the value: only the year comes from it.
    Date {
        time: bool,
    },
}

impl TokenKind {
    /// Identifier tokens are unique in their domain (keys stay keys); surrogates need not be.
    pub fn unique(self) -> bool {
        !matches!(self, TokenKind::Surrogate(_))
    }
}

/// Makes a digit string canonical as a number: the first digit of an integer part longer than
/// one digit and the last digit after the point are never `0` (drawn again from 1–9).
fn canonical_digits(t: &mut [char], rng: &mut Seed) {
    let nonzero = |rng: &mut Seed| char::from(b'1' + (rng.next_u32() % 9) as u8);
    let start = usize::from(t.first() == Some(&'-'));
    let point = t.iter().position(|c| *c == '.').unwrap_or(t.len());
    if point - start > 1 && t[start] == '0' {
        t[start] = nonzero(rng);
    }
    if point + 1 < t.len() && t[t.len() - 1] == '0' {
        let last = t.len() - 1;
        t[last] = nonzero(rng);
    }
}

/// The canonical text of a `numeric` value (leading zeros of the integer part and trailing zeros
/// after the point removed), so `42`, `042` and `42.00` are one value; `None` for text that is
/// not a finite decimal (`NaN`, `Infinity`).
pub fn canonical_numeric(v: &str) -> Option<String> {
    let v = v.trim();
    let (sign, body) = match v.strip_prefix('-') {
        Some(b) => ("-", b),
        None => ("", v.strip_prefix('+').unwrap_or(v)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let sign = if int == "0" && frac.is_empty() {
        ""
    } else {
        sign
    };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// SSN areas never issued: 000, 666, 900–999.
pub(super) fn unissued_area(i: u64) -> u32 {
    match i % 102 {
        0 => 0,
        1 => 666,
        n => 898 + n as u32,
    }
}

/// A vault-held rule: its domain, the token form, and where candidates come from.
pub struct VaultRule {
    pub domain: Arc<str>,
    pub kind: TokenKind,
    pub key: DomainKey,
    /// Safe Harbor: candidates are random (not derived from the value).
    pub random: bool,
}

impl std::fmt::Debug for VaultRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VaultRule({}, {:?}, {})",
            self.domain,
            self.kind,
            if self.random { "random" } else { "keyed" }
        )
    }
}

impl VaultRule {
    /// Candidate number `attempt` for `value` (the vault tries the next one when a candidate is
    /// already some other value's token). Never the value itself: a short layout (a two-byte
    /// integer, three digits) would otherwise give some rows their own value back by chance.
    pub fn candidate(&self, value: &str, attempt: u32) -> String {
        let mut c = self.candidate_once(value, attempt);
        for k in 1..16u32 {
            if c.trim() != value.trim() {
                break;
            }
            c = self.candidate_once(value, attempt ^ (k << 24));
        }
        c
    }

    fn candidate_once(&self, value: &str, attempt: u32) -> String {
        let mut rng = if self.random {
            Seed::Random
        } else {
            Seed::Keyed(self.key.stream(value.as_bytes(), attempt))
        };
        match self.kind {
            TokenKind::Int { bits } => {
                let x = rng.next_u64() & mask(bits);
                let negative = value.trim().starts_with('-');
                (if negative { !(x as i64) } else { x as i64 }).to_string()
            }
            TokenKind::Text => {
                if !self.random && attempt == 0 {
                    self.key.text(value)
                } else {
                    shape(value, &mut rng)
                }
            }
            TokenKind::Numeric => {
                let mut t: Vec<char> = if !self.random && attempt == 0 {
                    self.key.text(value).chars().collect()
                } else {
                    shape(value, &mut rng).chars().collect()
                };
                canonical_digits(&mut t, &mut rng);
                t.into_iter().collect()
            }
            TokenKind::Ssn => {
                let n = value.chars().filter(char::is_ascii_digit).count();
                if n != 9 {
                    return fallback_text(self, value, attempt, &mut rng);
                }
                let area = unissued_area(rng.next_u64());
                let rest = rng.next_u64() % 1_000_000;
                let digits = format!("{area:03}{rest:06}");
                let mut d = digits.chars();
                value
                    .chars()
                    .map(|c| {
                        if c.is_ascii_digit() {
                            d.next().unwrap_or('0')
                        } else {
                            c
                        }
                    })
                    .collect()
            }
            TokenKind::Email => match value.rsplit_once('@') {
                Some((local, _)) if !local.is_empty() => {
                    format!("{}@{EMAIL_DOMAIN}", shape(local, &mut rng))
                }
                _ => fallback_text(self, value, attempt, &mut rng),
            },
            TokenKind::Uuid => {
                let mut b = [0u8; 16];
                rng.fill(&mut b);
                b[6] = (b[6] & 0x0f) | 0x40;
                b[8] = (b[8] & 0x3f) | 0x80;
                let h = hex::encode(b);
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                )
            }
            TokenKind::Bytea => {
                let n = value
                    .strip_prefix("\\x")
                    .map(|h| h.len() / 2)
                    .unwrap_or(value.len());
                let mut b = vec![0u8; n];
                rng.fill(&mut b);
                format!("\\x{}", hex::encode(b))
            }
            TokenKind::Date { time } => date_candidate(value, time, &mut rng),
            TokenKind::Surrogate(kind) => {
                let (part, person) = match kind {
                    SurrogateKind::Name => (Part::Given, true),
                    SurrogateKind::GivenName => (Part::Given, false),
                    SurrogateKind::FamilyName => (Part::Family, false),
                    SurrogateKind::Street => (Part::Street, false),
                    SurrogateKind::City => (Part::Place, false),
                };
                let cell = std::cell::RefCell::new(rng);
                surrogate::replace_words(
                    value,
                    part,
                    person,
                    &mut || cell.borrow_mut().next_u64(),
                    &mut |piece| shape(piece, &mut cell.borrow_mut()),
                )
            }
        }
    }
}

/// A date in the value's year, drawn from `rng` (day of the year and, for a timestamp, the time
/// of day; a time zone suffix is kept). `infinity` and `-infinity` identify no one and stay.
/// A value without a four-digit year (BC dates) becomes 1900-01-01.
pub(super) fn date_candidate(value: &str, time: bool, rng: &mut Seed) -> String {
    let v = value.trim();
    if v == "infinity" || v == "-infinity" {
        return v.to_owned();
    }
    let year: Option<i32> = v
        .get(0..4)
        .filter(|_| v.as_bytes().get(4) == Some(&b'-') && !v.ends_with("BC"))
        .and_then(|y| y.parse().ok());
    let Some(year) = year else {
        return if time {
            "1900-01-01 00:00:00".into()
        } else {
            "1900-01-01".into()
        };
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut day = (rng.next_u64() % if leap { 366 } else { 365 }) as u32;
    let mut month = 0;
    while day >= months[month] {
        day -= months[month];
        month += 1;
    }
    let date = format!("{year:04}-{:02}-{:02}", month + 1, day + 1);
    if !time {
        return date;
    }
    let secs = rng.next_u64() % 86_400;
    // The zone of a `timestamptz` in text ("…:SS+00", "…:SS.ffffff-05:30"): kept as it was.
    let zone = v
        .get(19..)
        .map(|rest| rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit()))
        .unwrap_or("");
    format!(
        "{date} {:02}:{:02}:{:02}{zone}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A value the rule cannot parse: a layout-keeping token, never the original.
pub(super) fn fallback_text(rule: &VaultRule, value: &str, attempt: u32, rng: &mut Seed) -> String {
    if !rule.random && attempt == 0 {
        rule.key.text(value)
    } else {
        shape(value, rng)
    }
}

/// One value whose token the vault must provide before the row can be published.
pub struct VaultRequest {
    pub rule: Arc<VaultRule>,
    pub hash: [u8; 32],
    pub value: String,
}

impl std::fmt::Debug for VaultRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultRequest({:?}, value=<redacted>)", self.rule)
    }
}
