//! De-identification transforms: what a real value becomes before it leaves production.
//!
//! Two families, chosen per column by the registry's profile:
//! - `expert_determination`: keyed, deterministic tokens. Integers go through a keyed
//!   format-preserving permutation (an alternating Feistel network over exactly the bits of the
//!   type's non-negative range, SipHash-1-3 round function), so ids keep their type and sign and
//!   never collide; it inverts with the key. Other identifiers get a candidate computed from the
//!   value with the domain key.
//! - `safe_harbor`: tokens *not derived from the value*: random, allocated and remembered by the
//!   vault so they stay consistent.
//!
//! Every token that is not an integer permutation is held by the vault ([`crate::vault`]): the
//! vault keeps it unique within its domain (retrying the next candidate on a clash) and remembers
//! value → token so one-way tokens can be revealed by the compliance role. The hot path only
//! looks tokens up ([`TokenStore`]); a miss is recorded as a [`VaultRequest`] and the caller
//! allocates the batch's misses in one round trip, then transforms again.
//!
//! Shapes: SSNs become SSNs in never-issued areas (000, 666, 900–999); e-mails keep
//! `local@domain` shape on the reserved `example.com`; names, streets and cities become surrogates
//! from bundled lists of the same script ([`crate::surrogate`]); other text keeps its layout
//! (digits stay digits, letters stay letters of their script and case). `date_shift` moves every
//! date of one entity by the same keyed offset; `year_only`, `zip3`, `age_cap` are the Safe Harbor
//! generalizations; `redact` replaces scanner spans; `json` applies rules to paths inside JSON.
//!
//! Errors name the rule and the type, never the value.

use crate::catalog::TypeClass;
use crate::registry::{Profile, Rule, SurrogateKind};
use crate::scanner::Scanner;
use crate::surrogate::{self, Part};
use std::sync::Arc;

/// Context strings for BLAKE3 key derivation. Changing them changes every token.
const DOMAIN_CONTEXT: &str = "veil 2026-11 tokenize domain v1";
const KEY_ID_CONTEXT: &str = "veil 2026-11 key id v1";
const FALLBACK_CONTEXT: &str = "veil 2026-11 fallback v1";
const ROUND_CONTEXT: &str = "veil 2026-11 feistel round key v2";
const INDEX_CONTEXT: &str = "veil 2026-11 vault index v1";
const SHIFT_CONTEXT: &str = "veil 2026-11 date shift v1";

/// Three-digit ZIP prefixes whose area has 20,000 people or fewer (HHS Safe Harbor guidance,
/// 2000 census), generalized to `000`.
pub const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

/// The reserved domain (RFC 2606) every e-mail token is written on.
pub const EMAIL_DOMAIN: &str = "example.com";

/// Feistel rounds (FF1 uses 10).
const ROUNDS: u32 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeidError {
    #[error("rule {rule} is not defined for type {type_name}")]
    NotApplicable { rule: String, type_name: String },
    #[error("rule date_shift: entity column {entity} is not a column of the table")]
    NoEntity { entity: String },
    #[error("value is not valid UTF-8")]
    NotUtf8,
    #[error("value is not valid JSON")]
    NotJson,
}

/// The master key, production side only.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={})", self.key_id())
    }
}

impl MasterKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// A public identifier of the key (travels with every event so rotation is visible).
    pub fn key_id(&self) -> String {
        hex::encode(&blake3::derive_key(KEY_ID_CONTEXT, &self.0)[..6])
    }

    /// The key of one tokenization domain.
    pub fn domain_key(&self, domain: &str) -> DomainKey {
        let mut material = Vec::with_capacity(33 + domain.len());
        material.extend_from_slice(&self.0);
        material.push(0);
        material.extend_from_slice(domain.as_bytes());
        DomainKey::new(blake3::derive_key(DOMAIN_CONTEXT, &material))
    }

    /// The key of the date shift of one entity domain (separate from its token key).
    pub fn shift_key(&self, domain: &str) -> DomainKey {
        let d = self.domain_key(domain);
        DomainKey::new(blake3::derive_key(SHIFT_CONTEXT, &d.key))
    }

    pub fn fallback_key(&self) -> DomainKey {
        DomainKey::new(blake3::derive_key(FALLBACK_CONTEXT, &self.0))
    }
}

/// SipHash-c-d of one 64-bit word (the round function of the Feistel network uses 1-3, the
/// variant Rust's standard hasher uses).
#[inline]
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, m: u64) -> u64 {
    let mut v0 = k0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k1 ^ 0x7465_6462_7974_6573;
    // Written out so the state stays in registers.
    macro_rules! rounds {
        ($n:expr) => {
            for _ in 0..$n {
                v0 = v0.wrapping_add(v1);
                v1 = v1.rotate_left(13);
                v1 ^= v0;
                v0 = v0.rotate_left(32);
                v2 = v2.wrapping_add(v3);
                v3 = v3.rotate_left(16);
                v3 ^= v2;
                v0 = v0.wrapping_add(v3);
                v3 = v3.rotate_left(21);
                v3 ^= v0;
                v2 = v2.wrapping_add(v1);
                v1 = v1.rotate_left(17);
                v1 ^= v2;
                v2 = v2.rotate_left(32);
            }
        };
    }
    v3 ^= m;
    rounds!(C);
    v0 ^= m;
    let b = 8u64 << 56;
    v3 ^= b;
    rounds!(C);
    v0 ^= b;
    v2 ^= 0xff;
    rounds!(D);
    v0 ^ v1 ^ v2 ^ v3
}

#[inline]
fn sip13(k0: u64, k1: u64, m: u64) -> u64 {
    siphash::<1, 3>(k0, k1, m)
}

#[derive(Clone)]
pub struct DomainKey {
    key: [u8; 32],
    /// Key of the vault's value index (derived once; the hot path hashes with it per value).
    index_key: [u8; 32],
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DomainKey(***)")
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl DomainKey {
    pub fn new(key: [u8; 32]) -> Self {
        let rk = blake3::derive_key(ROUND_CONTEXT, &key);
        let k0 = u64::from_le_bytes(rk[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(rk[8..16].try_into().expect("8 bytes"));
        DomainKey {
            index_key: blake3::derive_key(INDEX_CONTEXT, &key),
            key,
            k0,
            k1,
        }
    }

    #[inline]
    fn f(&self, round: u32, bits: u32, tweak: u64, x: u64) -> u64 {
        sip13(
            self.k0 ^ tweak,
            self.k1,
            x | (u64::from(round) << 48) | (u64::from(bits) << 56),
        )
    }

    /// Keyed permutation of `[0, 2^bits)`, 2 ≤ `bits` ≤ 64: an alternating Feistel network
    /// (halves of ⌊bits/2⌋ and ⌈bits/2⌉ bits, the roles swapping every round, as in FF1), so
    /// it covers exactly the range without cycle walking. `tweak` selects an independent
    /// permutation.
    pub fn permute_bits(&self, x: u64, bits: u32, tweak: u64) -> u64 {
        let u = bits / 2;
        let v = bits - u;
        let mut a = (x >> v) & mask(u);
        let mut b = x & mask(v);
        for i in 0..ROUNDS {
            let m = if i % 2 == 0 { u } else { v };
            let c = (a ^ self.f(i, bits, tweak, b)) & mask(m);
            a = b;
            b = c;
        }
        // After an even number of rounds `a` has u bits again, `b` has v bits.
        (a << v) | b
    }

    /// Inverse of [`Self::permute_bits`].
    pub fn unpermute_bits(&self, y: u64, bits: u32, tweak: u64) -> u64 {
        let u = bits / 2;
        let v = bits - u;
        let mut a = (y >> v) & mask(u);
        let mut b = y & mask(v);
        for i in (0..ROUNDS).rev() {
            let m = if i % 2 == 0 { u } else { v };
            let prev_b = a;
            let prev_a = (b ^ self.f(i, bits, tweak, prev_b)) & mask(m);
            a = prev_a;
            b = prev_b;
        }
        (a << v) | b
    }

    pub fn permute_nonneg(&self, x: u64, bits: u32) -> u64 {
        self.permute_bits(x, bits, 0)
    }

    pub fn unpermute_nonneg(&self, y: u64, bits: u32) -> u64 {
        self.unpermute_bits(y, bits, 0)
    }

    /// Sign-preserving permutation of a signed integer of `bits + 1` bits (negatives map
    /// through bitwise NOT).
    pub fn permute_int(&self, v: i64, bits: u32) -> i64 {
        if v >= 0 {
            self.permute_nonneg(v as u64, bits) as i64
        } else {
            !(self.permute_nonneg((!v) as u64, bits) as i64)
        }
    }

    pub fn unpermute_int(&self, v: i64, bits: u32) -> i64 {
        if v >= 0 {
            self.unpermute_nonneg(v as u64, bits) as i64
        } else {
            !(self.unpermute_nonneg((!v) as u64, bits) as i64)
        }
    }

    /// Keyed permutation of `[0, 10^n)` (n ≤ 18) by cycle walking over the smallest power of
    /// two above it.
    pub fn permute_decimal(&self, x: u64, n: u32, tweak: u64) -> u64 {
        let size = 10u64.pow(n);
        let bits = (64 - (size - 1).leading_zeros()).max(2);
        let mut y = self.permute_bits(x, bits, tweak);
        while y >= size {
            y = self.permute_bits(y, bits, tweak);
        }
        y
    }

    /// The vault's index of a value in this domain (a keyed hash; not a token input).
    pub fn value_hash(&self, value: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.index_key, value.as_bytes()).as_bytes()
    }

    fn stream(&self, value: &[u8], attempt: u32) -> blake3::OutputReader {
        blake3::Hasher::new_keyed(&self.key)
            .update(&attempt.to_le_bytes())
            .update(value)
            .finalize_xof()
    }

    fn tweak(&self, s: &str) -> u64 {
        let h = blake3::keyed_hash(&self.key, s.as_bytes());
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Deterministic layout-keeping text: the digits are permuted as one number per layout
    /// (so values of one layout never collide), letters substituted by a keyed stream. Used as
    /// the first candidate of expert-determination text tokens and as the fallback token.
    pub fn text(&self, value: &str) -> String {
        let skeleton: String = value
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        let digits: Vec<u8> = value
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        let n = digits.len();
        let mut rng = Seed::Keyed(self.stream(skeleton.as_bytes(), 0));
        let new_digits: Vec<u8> = if n > 0 && n <= 18 {
            let x = digits.iter().fold(0u64, |a, d| a * 10 + u64::from(*d));
            let y = self.permute_decimal(x, n as u32, self.tweak(&skeleton));
            format!("{y:0n$}").bytes().map(|b| b - b'0').collect()
        } else {
            let mut r = Seed::Keyed(self.stream(value.as_bytes(), 1));
            (0..n).map(|_| (r.next_u32() % 10) as u8).collect()
        };
        let mut d = new_digits.into_iter();
        value
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    char::from(b'0' + d.next().unwrap_or(0))
                } else {
                    shape_char(c, &mut rng)
                }
            })
            .collect()
    }
}

/// Where a token's randomness comes from: a keyed stream over the value (deterministic) or the
/// operating system (Safe Harbor: not derived from the value).
pub enum Seed {
    Keyed(blake3::OutputReader),
    Random,
}

impl Seed {
    pub fn next_u64(&mut self) -> u64 {
        match self {
            Seed::Keyed(r) => {
                let mut b = [0u8; 8];
                r.fill(&mut b);
                u64::from_le_bytes(b)
            }
            Seed::Random => rand::random(),
        }
    }
    pub fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn fill(&mut self, b: &mut [u8]) {
        match self {
            Seed::Keyed(r) => r.fill(b),
            Seed::Random => b.iter_mut().for_each(|x| *x = rand::random()),
        }
    }
}

/// Ranges within which a character is substituted: (first code point, size).
fn char_class(c: char) -> Option<(u32, u32)> {
    let u = c as u32;
    const RANGES: &[(u32, u32)] = &[
        (0x30, 0x39),       // digits
        (0x41, 0x5A),       // A-Z
        (0x61, 0x7A),       // a-z
        (0x391, 0x3A1),     // Greek capitals (before the gap)
        (0x3B1, 0x3C9),     // Greek small
        (0x410, 0x42F),     // Cyrillic capitals
        (0x430, 0x44F),     // Cyrillic small
        (0x5D0, 0x5EA),     // Hebrew
        (0x621, 0x63A),     // Arabic letters
        (0x641, 0x64A),     // Arabic letters
        (0x905, 0x939),     // Devanagari
        (0x3041, 0x3096),   // Hiragana
        (0x30A1, 0x30FA),   // Katakana
        (0x4E00, 0x9FFF),   // CJK unified ideographs
        (0xAC00, 0xD7A3),   // Hangul syllables
        (0x1F600, 0x1F64F), // emoticons
    ];
    for &(lo, hi) in RANGES {
        if (lo..=hi).contains(&u) {
            return Some((lo, hi - lo + 1));
        }
    }
    if c.is_alphanumeric() {
        // Any other letter or digit (accented, rarer scripts): a letter of the same script where
        // veil has a range for it, else a lower-case Latin letter — never the original.
        return Some(match u {
            0x370..=0x3FF | 0x1F00..=0x1FFF => (0x3B1, 25), // Greek (tonos, polytonic)
            0x400..=0x52F => (0x430, 32),                   // Cyrillic extensions
            0x600..=0x6FF | 0x750..=0x77F => (0x641, 10),   // Arabic extensions
            0x3040..=0x30FF => (0x3041, 86),                // kana extensions
            _ => (0x61, 26),
        });
    }
    None
}

fn shape_char(c: char, rng: &mut Seed) -> char {
    match char_class(c) {
        Some((lo, size)) => char::from_u32(lo + rng.next_u32() % size).unwrap_or('x'),
        None => c,
    }
}

/// Layout-keeping substitution from `rng`: digits stay digits, letters stay letters of their
/// script and case, everything else stays.
pub fn shape(value: &str, rng: &mut Seed) -> String {
    value.chars().map(|c| shape_char(c, rng)).collect()
}

/// The form of a vault-held token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An integer of `bits + 1` bits, same sign (Safe Harbor ids).
    Int {
        bits: u32,
    },
    /// Layout-keeping text (also numeric ids: digits stay digits).
    Text,
    Ssn,
    Email,
    Uuid,
    Bytea,
    Surrogate(SurrogateKind),
}

impl TokenKind {
    /// Identifier tokens are unique in their domain (keys stay keys); surrogates need not be.
    pub fn unique(self) -> bool {
        !matches!(self, TokenKind::Surrogate(_))
    }
}

/// SSN areas never issued: 000, 666, 900–999.
fn unissued_area(i: u64) -> u32 {
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
    /// already some other value's token).
    pub fn candidate(&self, value: &str, attempt: u32) -> String {
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

/// A value the rule cannot parse: a layout-keeping token, never the original.
fn fallback_text(rule: &VaultRule, value: &str, attempt: u32, rng: &mut Seed) -> String {
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

/// Read access to vault-held tokens (the hot path never writes).
pub trait TokenStore: Send + Sync {
    fn get(&self, domain: &str, hash: &[u8; 32]) -> Option<Arc<str>>;
}

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    AnyKey,
    AnyIndex,
}

/// Parses `$.a.b[*].c` / `$.*` into segments.
pub fn parse_path(p: &str) -> Result<Vec<PathSeg>, String> {
    let rest = p
        .strip_prefix('$')
        .ok_or_else(|| format!("JSON path {p:?} must start with $"))?;
    let mut segs = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix("[*]") {
            segs.push(PathSeg::AnyIndex);
            s = r;
        } else if let Some(r) = s.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() {
                return Err(format!("JSON path {p:?} has an empty key"));
            }
            segs.push(if key == "*" {
                PathSeg::AnyKey
            } else {
                PathSeg::Key(key.to_owned())
            });
            s = &r[end..];
        } else {
            return Err(format!(
                "JSON path {p:?}: expected .key or [*] at {:?}",
                s.chars().take(10).collect::<String>()
            ));
        }
    }
    Ok(segs)
}

enum Step {
    Key(String),
    Index,
}

fn path_matches(rule: &[PathSeg], at: &[Step]) -> bool {
    rule.len() <= at.len()
        && rule.iter().zip(at).all(|(r, s)| match (r, s) {
            (PathSeg::Key(k), Step::Key(a)) => k == a,
            (PathSeg::AnyKey, Step::Key(_)) => true,
            (PathSeg::AnyIndex, Step::Index) => true,
            _ => false,
        })
}

fn int_bits(class: &TypeClass) -> u32 {
    match class {
        TypeClass::Int2 => 15,
        TypeClass::Int4 => 31,
        _ => 63,
    }
}

fn not_applicable(rule: &str, class: &TypeClass) -> DeidError {
    DeidError::NotApplicable {
        rule: rule.into(),
        type_name: class.name(),
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
            let value = if v.kind == TokenKind::Uuid {
                normalized = value.trim().to_ascii_lowercase();
                normalized.as_str()
            } else {
                value
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

fn json_walk(
    v: &mut serde_json::Value,
    at: &mut Vec<Step>,
    rules: &JsonRules,
    cx: &mut Cx,
) -> Result<(), DeidError> {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            for (k, child) in map.iter_mut() {
                at.push(Step::Key(k.clone()));
                json_walk(child, at, rules, cx)?;
                at.pop();
            }
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

/// The keyed offset of one entity, in days, in `[-max, -1] ∪ [1, max]` (never zero).
pub fn shift_days(key: &DomainKey, entity: &str, max_days: u32) -> i64 {
    let h = blake3::keyed_hash(&key.key, entity.as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    let max = u64::from(max_days.max(1));
    let k = (x % (2 * max)) as i64; // 0 .. 2max-1
    let max = max as i64;
    if k < max { k - max } else { k - max + 1 }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Shifts the date part of PostgreSQL's text form of a date or timestamp (`YYYY-MM-DD…[ BC]`)
/// by `days`, keeping the time and zone. `None` when the text is not such a date.
pub fn shift_date_text(value: &str, days: i64) -> Option<String> {
    let (body, bc) = match value.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (value, false),
    };
    let dash1 = body.find('-')?;
    let (ys, rest) = body.split_at(dash1);
    if ys.len() < 4 || !ys.bytes().all(|b| b.is_ascii_digit()) || rest.len() < 6 {
        return None;
    }
    let ms = rest.get(1..3)?;
    let ds = rest.get(4..6)?;
    if rest.as_bytes().get(3) != Some(&b'-') {
        return None;
    }
    let tail = &rest[6..];
    let y: i64 = ys.parse().ok()?;
    let m: u32 = ms.parse().ok()?;
    let d: u32 = ds.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let astro = if bc { 1 - y } else { y };
    let (ny, nm, nd) = civil_from_days(days_from_civil(astro, m, d) + days);
    let (year, bc) = if ny <= 0 { (1 - ny, true) } else { (ny, false) };
    Some(format!(
        "{year:04}-{nm:02}-{nd:02}{tail}{}",
        if bc { " BC" } else { "" }
    ))
}

fn fallback_date(key: &DomainKey, value: &str, class: &TypeClass) -> Result<String, DeidError> {
    let h = key.tweak(value);
    let (y, m, d) = civil_from_days(days_from_civil(1900, 1, 1) + (h % 36_500) as i64);
    let date = format!("{y:04}-{m:02}-{d:02}");
    Ok(match class {
        TypeClass::Date => date,
        TypeClass::Timestamp => format!("{date} 00:00:00"),
        TypeClass::Timestamptz => format!("{date} 00:00:00+00"),
        other => return Err(not_applicable("date_shift", other)),
    })
}

/// Safe Harbor ZIP generalization: the first three digits, or `000` for restricted areas and
/// for anything that is not a ZIP.
pub fn zip3(value: &str) -> String {
    let digits: String = value.chars().take(3).collect();
    if digits.len() == 3
        && digits.chars().all(|c| c.is_ascii_digit())
        && !RESTRICTED_ZIP3.contains(&digits.as_str())
    {
        digits
    } else {
        "000".into()
    }
}

/// [`zip3`] with the restricted prefixes given as data (the registry's `restricted_zip3.txt`).
pub fn zip3_with(value: &str, restricted: &[String]) -> String {
    let digits: String = value.chars().take(3).collect();
    if digits.len() == 3
        && digits.chars().all(|c| c.is_ascii_digit())
        && !restricted.contains(&digits)
    {
        digits
    } else {
        "000".into()
    }
}

/// Everything binding needs besides the rule and the type.
pub struct BindCx<'a> {
    pub master: &'a MasterKey,
    pub profile: Profile,
    /// Position of a column of the same table (for `date_shift`'s entity).
    pub column_index: &'a dyn Fn(&str) -> Option<usize>,
    pub scanner: &'a Arc<Scanner>,
    /// Restricted three-digit ZIP prefixes (`zip3` maps them to `000`).
    pub restricted_zip3: &'a Arc<Vec<String>>,
}

struct NullStore;
impl TokenStore for NullStore {
    fn get(&self, _: &str, _: &[u8; 32]) -> Option<Arc<str>> {
        None
    }
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
                TypeClass::Text | TypeClass::Numeric => vault(domain, TokenKind::Text),
                TypeClass::Uuid => vault(domain, TokenKind::Uuid),
                TypeClass::Bytea => vault(domain, TokenKind::Bytea),
                other => return Err(not_applicable("tokenize", other)),
            },
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
            Rule::Json { paths, keep_others } => {
                let mut bound = Vec::with_capacity(paths.len());
                for (path, r) in paths {
                    let segs = parse_path(path).map_err(|_| not_applicable("json", class))?;
                    // Leaves are strings or numbers: bind as text (numbers become numeric).
                    let leaf_class = match r {
                        Rule::Tokenize { .. } | Rule::AgeCap => TypeClass::Numeric,
                        Rule::DateShift { .. } | Rule::YearOnly => TypeClass::Date,
                        _ => TypeClass::Text,
                    };
                    bound.push((segs, RuleKey::bind(r, &leaf_class, cx)?));
                }
                RuleKey::Json(Arc::new(JsonRules {
                    paths: bound,
                    keep_others: *keep_others,
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
            RuleKey::Vault(_) => true,
            RuleKey::Json(j) => j.paths.iter().any(|(_, r)| r.uses_vault()),
            _ => false,
        }
    }
}

fn text_only(rule: &str, class: &TypeClass, bound: RuleKey) -> Result<RuleKey, DeidError> {
    match class {
        TypeClass::Text => Ok(bound),
        other => Err(not_applicable(rule, other)),
    }
}

/// An in-process token store that allocates like the vault does (candidate 0, 1, … until one is
/// free in the domain). For unit tests, benches and dry runs; production uses [`crate::vault`].
/// Value hashes are keyed per domain, so the hash alone identifies (domain, value).
type TokenMap = std::collections::HashMap<[u8; 32], Arc<str>>;

#[derive(Default)]
pub struct MemoryStore {
    by_hash: std::sync::RwLock<TokenMap>,
    taken: std::sync::RwLock<std::collections::HashSet<(Arc<str>, Arc<str>)>>,
}

impl TokenStore for MemoryStore {
    fn get(&self, _domain: &str, hash: &[u8; 32]) -> Option<Arc<str>> {
        self.by_hash.read().ok()?.get(hash).cloned()
    }
}

impl MemoryStore {
    /// Allocates tokens for every request (unique per domain).
    pub fn allocate(&self, requests: &[VaultRequest]) {
        let (Ok(mut by_hash), Ok(mut taken)) = (self.by_hash.write(), self.taken.write()) else {
            return;
        };
        for r in requests {
            let k = r.hash;
            if by_hash.contains_key(&k) {
                continue;
            }
            let mut attempt = 0;
            loop {
                let t: Arc<str> = r.rule.candidate(&r.value, attempt).into();
                if !r.rule.kind.unique() || taken.insert((r.rule.domain.clone(), t.clone())) {
                    by_hash.insert(k, t);
                    break;
                }
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            j.chars().all(|c| c == ' '
                || crate::surrogate::char_script(c) == Some(crate::surrogate::Script::Han))
        );
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
        let store = MemoryStore::default();
        let row = [Some("17")];
        let mut misses = Vec::new();
        let out = apply(
            rule,
            class,
            v,
            &mut Cx {
                store: &store,
                misses: &mut misses,
                row: &row,
            },
        )
        .unwrap();
        if misses.is_empty() {
            return out;
        }
        store.allocate(&misses);
        misses.clear();
        apply(
            rule,
            class,
            v,
            &mut Cx {
                store: &store,
                misses: &mut misses,
                row: &row,
            },
        )
        .unwrap()
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
        let m = key();
        let scanner = Arc::new(Scanner::standard());
        let idx = |_: &str| Some(0usize);
        let bcx = BindCx {
            master: &m,
            profile: Profile::ExpertDetermination,
            column_index: &idx,
            scanner: &scanner,
            restricted_zip3: &Arc::new(RESTRICTED_ZIP3.iter().map(|s| s.to_string()).collect()),
        };
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
        };
        let bound = RuleKey::bind(&rule, &TypeClass::Jsonb, &bcx).unwrap();
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
        assert!(v["visit"]["secret"].is_null());
        assert!(v["n"].is_null());
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
}
