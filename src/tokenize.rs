//! De-identification transforms: the keyed, deterministic functions that turn a real value into
//! what dev sees. Pure functions of (key, value): same input, same output, in every table, every
//! run, every process. Domains are separated by key derivation, so equal values in different
//! domains do not link.
//!
//! - Integers: keyed Feistel permutation with cycle walking over the non-negative range of the
//!   type (negatives map through bitwise NOT), so ids keep their type and sign and never collide.
//! - Text: shape-preserving substitution driven by a keyed BLAKE3 stream over the whole value:
//!   digits stay digits, letters stay letters of the same script and case, punctuation and spaces
//!   stay. (Collision-free digit strings and vault-allocated tokens come with the tokenization
//!   issue; see ARCHITECTURE.md.)
//! - UUID: a version-4-shaped UUID from the keyed hash. Bytea: keyed bytes of the same length.
//! - `year_only`, `zip3` (Safe Harbor), `scrub`.
//!
//! Errors name the rule and the type, never the value.

use crate::catalog::TypeClass;
use crate::registry::Rule;

/// Context strings for BLAKE3 key derivation. Changing them changes every token.
const DOMAIN_CONTEXT: &str = "veil 2026-11 tokenize domain v1";
const KEY_ID_CONTEXT: &str = "veil 2026-11 key id v1";
const FALLBACK_CONTEXT: &str = "veil 2026-11 fallback v1";

/// Three-digit ZIP prefixes whose area has 20,000 people or fewer (HHS Safe Harbor guidance,
/// 2000 census), generalized to `000`.
pub const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeidError {
    #[error("rule {rule} is not defined for type {type_name}")]
    NotApplicable { rule: String, type_name: String },
    #[error("value is not valid UTF-8")]
    NotUtf8,
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
        DomainKey(blake3::derive_key(DOMAIN_CONTEXT, &material))
    }

    pub fn fallback_key(&self) -> DomainKey {
        DomainKey(blake3::derive_key(FALLBACK_CONTEXT, &self.0))
    }
}

#[derive(Clone)]
pub struct DomainKey([u8; 32]);

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DomainKey(***)")
    }
}

impl DomainKey {
    fn stream(&self, value: &[u8]) -> blake3::OutputReader {
        blake3::Hasher::new_keyed(&self.0)
            .update(value)
            .finalize_xof()
    }

    fn round(&self, round: u8, half: u64) -> u64 {
        let mut input = [0u8; 9];
        input[0] = round;
        input[1..].copy_from_slice(&half.to_le_bytes());
        let h = blake3::keyed_hash(&self.0, &input);
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Balanced Feistel permutation over `2 * half_bits` bits.
    fn feistel(&self, x: u64, half_bits: u32) -> u64 {
        let mask = if half_bits == 64 {
            u64::MAX
        } else {
            (1u64 << half_bits) - 1
        };
        let mut l = (x >> half_bits) & mask;
        let mut r = x & mask;
        for round in 0..8u8 {
            let f = self.round(round, r) & mask;
            let nl = r;
            r = l ^ f;
            l = nl;
        }
        (l << half_bits) | r
    }

    /// Inverse of [`Self::feistel`].
    fn feistel_inv(&self, y: u64, half_bits: u32) -> u64 {
        let mask = (1u64 << half_bits) - 1;
        let mut l = (y >> half_bits) & mask;
        let mut r = y & mask;
        for round in (0..8u8).rev() {
            let f = self.round(round, l) & mask;
            let nr = l;
            l = r ^ f;
            r = nr;
        }
        (l << half_bits) | r
    }

    /// Keyed permutation of `[0, 2^bits)`, `bits` odd (15, 31, 63): Feistel over `bits + 1`
    /// bits with cycle walking.
    pub fn permute_nonneg(&self, x: u64, bits: u32) -> u64 {
        let half = bits.div_ceil(2);
        let limit = 1u64 << bits;
        let mut y = self.feistel(x, half);
        while y >= limit {
            y = self.feistel(y, half);
        }
        y
    }

    /// Inverse of [`Self::permute_nonneg`].
    pub fn unpermute_nonneg(&self, y: u64, bits: u32) -> u64 {
        let half = bits.div_ceil(2);
        let limit = 1u64 << bits;
        let mut x = self.feistel_inv(y, half);
        while x >= limit {
            x = self.feistel_inv(x, half);
        }
        x
    }

    /// Sign-preserving permutation of a signed integer of `bits + 1` bits.
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

    /// Shape-preserving text token. The digits of the value are permuted as one number with a
    /// keyed permutation tweaked by the rest of the value (its skeleton), so values of the same
    /// layout (SSNs, phones, MRNs with a fixed prefix) never collide; letters are substituted
    /// within their script by a keyed stream over the skeleton.
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
        let mut new_digits = self.permute_digits(&digits, &skeleton).into_iter();
        let mut stream = self.stream(skeleton.as_bytes());
        let mut fallback = self.stream(value.as_bytes());
        let mut out = String::with_capacity(value.len());
        let mut buf = [0u8; 4];
        for c in value.chars() {
            if c.is_ascii_digit() {
                match new_digits.next() {
                    Some(d) => out.push(char::from(b'0' + d)),
                    None => {
                        fallback.fill(&mut buf);
                        out.push(char::from(b'0' + (u32::from_le_bytes(buf) % 10) as u8));
                    }
                }
                continue;
            }
            match char_class(c) {
                Some((lo, size)) => {
                    stream.fill(&mut buf);
                    let k = u32::from_le_bytes(buf) % size;
                    out.push(char::from_u32(lo + k).unwrap_or('x'));
                }
                None => out.push(c),
            }
        }
        out
    }

    /// Keyed permutation of an n-digit string (n ≤ 18), tweaked by `tweak`; empty when longer.
    fn permute_digits(&self, digits: &[u8], tweak: &str) -> Vec<u8> {
        let n = digits.len();
        if n == 0 || n > 18 {
            return Vec::new();
        }
        let size = 10u64.pow(n as u32);
        let x = digits.iter().fold(0u64, |a, d| a * 10 + u64::from(*d));
        let sub = DomainKey(*blake3::keyed_hash(&self.0, tweak.as_bytes()).as_bytes());
        let bits = 64 - (size - 1).leading_zeros();
        let half = bits.div_ceil(2).max(1);
        let mut y = sub.feistel(x, half);
        while y >= size {
            y = sub.feistel(y, half);
        }
        format!("{y:0n$}").bytes().map(|b| b - b'0').collect()
    }

    /// Digits replaced, everything else kept (numeric values keep precision and scale).
    pub fn digits(&self, value: &str) -> String {
        let mut stream = self.stream(value.as_bytes());
        let mut buf = [0u8; 4];
        value
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    stream.fill(&mut buf);
                    char::from(b'0' + (u32::from_le_bytes(buf) % 10) as u8)
                } else {
                    c
                }
            })
            .collect()
    }

    pub fn uuid(&self, value: &str) -> String {
        let normalized = value.trim().to_ascii_lowercase();
        let mut b = [0u8; 16];
        self.stream(normalized.as_bytes()).fill(&mut b);
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

    /// `\x…` bytea text: keyed bytes of the same length.
    pub fn bytea(&self, value: &str) -> String {
        let n = value
            .strip_prefix("\\x")
            .map(|h| h.len() / 2)
            .unwrap_or(value.len());
        let mut b = vec![0u8; n];
        self.stream(value.as_bytes()).fill(&mut b);
        format!("\\x{}", hex::encode(b))
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

/// Applies a (validated) rule to one non-null text value of the given type.
pub fn apply(
    rule_key: &RuleKey,
    class: &TypeClass,
    value: &str,
) -> Result<Option<String>, DeidError> {
    Ok(Some(match rule_key {
        RuleKey::Keep => value.to_owned(),
        RuleKey::Scrub(r) => return Ok(r.clone()),
        RuleKey::Tokenize(key, fallback) => match class {
            TypeClass::Int2 | TypeClass::Int4 | TypeClass::Int8 => {
                let bits = int_bits(class);
                match value.trim().parse::<i64>() {
                    Ok(v) => key.permute_int(v, bits).to_string(),
                    // Cannot happen for a real integer column; never pass the value through.
                    Err(_) => fallback.permute_int(0, bits).to_string(),
                }
            }
            TypeClass::Numeric => {
                if value.chars().any(|c| c.is_ascii_digit()) {
                    key.digits(value)
                } else {
                    value.to_owned() // NaN, Infinity: not identifying
                }
            }
            TypeClass::Text => key.text(value),
            TypeClass::Uuid => key.uuid(value),
            TypeClass::Bytea => key.bytea(value),
            other => {
                return Err(DeidError::NotApplicable {
                    rule: "tokenize".into(),
                    type_name: other.name(),
                });
            }
        },
        RuleKey::YearOnly => {
            let year: String = value.chars().take_while(|c| *c != '-').collect();
            let bc = value.ends_with(" BC");
            let valid_year = !year.is_empty() && year.chars().all(|c| c.is_ascii_digit());
            let year = if valid_year { year } else { "1900".into() };
            let bc = if bc { " BC" } else { "" };
            match class {
                TypeClass::Date => format!("{year}-01-01{bc}"),
                TypeClass::Timestamp => format!("{year}-01-01 00:00:00{bc}"),
                TypeClass::Timestamptz => format!("{year}-01-01 00:00:00+00{bc}"),
                other => {
                    return Err(DeidError::NotApplicable {
                        rule: "year_only".into(),
                        type_name: other.name(),
                    });
                }
            }
        }
        RuleKey::Zip3 => match class {
            TypeClass::Text => zip3(value),
            other => {
                return Err(DeidError::NotApplicable {
                    rule: "zip3".into(),
                    type_name: other.name(),
                });
            }
        },
    }))
}

fn int_bits(class: &TypeClass) -> u32 {
    match class {
        TypeClass::Int2 => 15,
        TypeClass::Int4 => 31,
        _ => 63,
    }
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

/// A rule bound to its key material, ready for the hot path.
#[derive(Debug, Clone)]
pub enum RuleKey {
    Keep,
    Tokenize(DomainKey, DomainKey),
    Scrub(Option<String>),
    YearOnly,
    Zip3,
}

impl RuleKey {
    /// Binds a registry rule to keys and checks that it applies to the column type.
    pub fn bind(rule: &Rule, class: &TypeClass, master: &MasterKey) -> Result<Self, DeidError> {
        let bound = match rule {
            Rule::Keep => RuleKey::Keep,
            Rule::Tokenize { domain } => {
                RuleKey::Tokenize(master.domain_key(domain), master.fallback_key())
            }
            Rule::Scrub { replacement } => RuleKey::Scrub(replacement.clone()),
            Rule::YearOnly => RuleKey::YearOnly,
            Rule::Zip3 => RuleKey::Zip3,
        };
        // Probe with a harmless value so a rule/type mismatch is found at plan time.
        let probe = match class {
            TypeClass::Date | TypeClass::Timestamp | TypeClass::Timestamptz => "2000-01-01",
            TypeClass::Uuid => "00000000-0000-0000-0000-000000000000",
            _ => "0",
        };
        apply(&bound, class, probe)?;
        Ok(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::new([7; 32])
    }

    #[test]
    fn permutation_is_a_bijection_on_small_domain() {
        let k = key().domain_key("d");
        // 2^15 values of int2's non-negative range.
        let mut seen = vec![false; 1 << 15];
        for x in 0..(1u64 << 15) {
            let y = k.permute_nonneg(x, 15);
            assert!(y < 1 << 15);
            assert!(!seen[y as usize], "collision at {x}");
            seen[y as usize] = true;
            assert_eq!(k.unpermute_nonneg(y, 15), x);
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
        assert_ne!(a.text("Alice"), "Alice");
    }

    #[test]
    fn text_keeps_shape_and_script() {
        let k = key().domain_key("name");
        let t = k.text("山田 太郎");
        assert_eq!(t.chars().count(), 5);
        assert_eq!(t.chars().nth(2), Some(' '));
        assert!(
            t.chars()
                .filter(|c| *c != ' ')
                .all(|c| ('\u{4E00}'..='\u{9FFF}').contains(&c))
        );
        let s = k.text("123-45-6789");
        assert_eq!(s.len(), 11);
        assert_eq!(&s[3..4], "-");
        assert_ne!(s, "123-45-6789");
        assert_eq!(k.text(""), "");
        let g = k.text("Γιώργος Παπαδόπουλος");
        assert!(
            g.chars()
                .all(|c| c == ' ' || ('\u{391}'..='\u{3C9}').contains(&c)),
            "{g}"
        );
        let e = k.text("Zoë 😀 שלום");
        assert_eq!(e.chars().count(), "Zoë 😀 שלום".chars().count());
        assert!(!e.contains("Zo"));
    }

    #[test]
    fn same_layout_digit_strings_never_collide() {
        let k = key().domain_key("ssn");
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            let v = format!("{:02}-{:02}", i / 100, i % 100);
            let t = k.text(&v);
            assert_eq!(t.len(), 5);
            assert_eq!(&t[2..3], "-");
            assert!(seen.insert(t), "collision for {v}");
        }
    }

    #[test]
    fn safe_harbor_rules() {
        assert_eq!(zip3("02139"), "021");
        assert_eq!(zip3("03601"), "000");
        assert_eq!(zip3("x"), "000");
        let r = apply(&RuleKey::YearOnly, &TypeClass::Date, "1961-07-04").unwrap();
        assert_eq!(r.as_deref(), Some("1961-01-01"));
        assert!(apply(&RuleKey::YearOnly, &TypeClass::Bool, "t").is_err());
    }

    proptest::proptest! {
        #[test]
        fn int_permutation_roundtrips_on_full_ranges(v in proptest::num::i64::ANY, w in proptest::num::i32::ANY) {
            let k = MasterKey::new([3; 32]).domain_key("p");
            proptest::prop_assert_eq!(k.unpermute_int(k.permute_int(v, 63), 63), v);
            let t = k.permute_int(w as i64, 31);
            proptest::prop_assert!(t >= i32::MIN as i64 && t <= i32::MAX as i64);
            proptest::prop_assert_eq!(k.unpermute_int(t, 31), w as i64);
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
    }

    #[test]
    fn tokenize_rejects_inapplicable_types() {
        let m = key();
        let rule = Rule::Tokenize { domain: "x".into() };
        assert!(RuleKey::bind(&rule, &TypeClass::Jsonb, &m).is_err());
        assert!(RuleKey::bind(&rule, &TypeClass::Int8, &m).is_ok());
    }
}
