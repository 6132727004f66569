//! Key material: the master key, per-domain keys derived from it (BLAKE3), and the
//! format-preserving integer permutation (alternating Feistel over the exact bit width, SipHash-1-3
//! rounds). Nothing here sees a row value except as the input of a keyed function.

use crate::pg::catalog::TypeClass;

/// Context strings for BLAKE3 key derivation. Changing them changes every token.
pub(super) const DOMAIN_CONTEXT: &str = "veil 2026-11 tokenize domain v1";
pub(super) const KEY_ID_CONTEXT: &str = "veil 2026-11 key id v1";
pub(super) const FALLBACK_CONTEXT: &str = "veil 2026-11 fallback v1";
pub(super) const ROUND_CONTEXT: &str = "veil 2026-11 feistel round key v2";
pub(super) const INDEX_CONTEXT: &str = "veil 2026-11 vault index v1";
pub(super) const SHIFT_CONTEXT: &str = "veil 2026-11 date shift v1";

/// The reserved domain (RFC 2606) every e-mail token is written on.
pub const EMAIL_DOMAIN: &str = "example.com";

/// Feistel rounds (FF1 uses 10).
pub(super) const ROUNDS: u32 = 10;

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
    /// The master key from the production-side configuration: `VEIL_MASTER_KEY`, else
    /// `[keys] master_key_file`; 32 bytes as 64 hex characters.
    pub fn from_config(
        keys: &crate::config::KeysConfig,
    ) -> Result<Self, crate::error::ConfigError> {
        use crate::error::ConfigError;
        let text = crate::config::secret_or_file(&keys.master_key, &keys.master_key_file)?
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no master key: set [keys] master_key_file or VEIL_MASTER_KEY".into(),
                )
            })?;
        let bytes = hex::decode(text.trim()).map_err(|_| {
            ConfigError::Invalid("master key is not hex (expected 64 hex characters)".into())
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            ConfigError::Invalid("master key must be 32 bytes (64 hex characters)".into())
        })?;
        Ok(MasterKey::new(bytes))
    }

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
pub(super) fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, m: u64) -> u64 {
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
pub(super) fn sip13(k0: u64, k1: u64, m: u64) -> u64 {
    siphash::<1, 3>(k0, k1, m)
}

#[derive(Clone)]
pub struct DomainKey {
    pub(super) key: [u8; 32],
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

pub(super) fn mask(bits: u32) -> u64 {
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

    pub(super) fn stream(&self, value: &[u8], attempt: u32) -> blake3::OutputReader {
        blake3::Hasher::new_keyed(&self.key)
            .update(&attempt.to_le_bytes())
            .update(value)
            .finalize_xof()
    }

    pub(super) fn tweak(&self, s: &str) -> u64 {
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
    pub(super) fn fill(&mut self, b: &mut [u8]) {
        match self {
            Seed::Keyed(r) => r.fill(b),
            Seed::Random => b.iter_mut().for_each(|x| *x = rand::random()),
        }
    }
}

/// Ranges within which a character is substituted: (first code point, size).
pub(super) fn char_class(c: char) -> Option<(u32, u32)> {
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

pub(super) fn shape_char(c: char, rng: &mut Seed) -> char {
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

pub(super) fn not_applicable(rule: &str, class: &TypeClass) -> DeidError {
    DeidError::NotApplicable {
        rule: rule.into(),
        type_name: class.name(),
    }
}
