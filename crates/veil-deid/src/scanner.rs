//! The PHI scanner: content detectors with validators (SSN area/group/serial rules, NANP phone,
//! e-mail, MRN patterns, NPI with the 80840 Luhn prefix, card numbers with Luhn, dates, ZIP and
//! ZIP+4, IPv4/IPv6, URLs, VINs with their check digit, MAC addresses and IMEIs, street
//! addresses, person names from the surrogate word lists) and column-name rules.
//!
//! It finds spans and counts hits; it never stores, logs or returns a value outside the span
//! positions, and its results name detectors, never content. The `redact` rule replaces the
//! spans it finds with typed placeholders.

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    Ssn,
    Email,
    Url,
    Mrn,
    Npi,
    Card,
    Imei,
    Phone,
    Date,
    Vin,
    Mac,
    Ipv4,
    Ipv6,
    Address,
    Zip,
    Name,
}

impl Detector {
    pub const ALL: [Detector; 16] = [
        Detector::Ssn,
        Detector::Email,
        Detector::Url,
        Detector::Mrn,
        Detector::Npi,
        Detector::Card,
        Detector::Imei,
        Detector::Phone,
        Detector::Date,
        Detector::Vin,
        Detector::Mac,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::Address,
        Detector::Zip,
        Detector::Name,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::Ssn => "ssn",
            Detector::Email => "email",
            Detector::Url => "url",
            Detector::Mrn => "mrn",
            Detector::Npi => "npi",
            Detector::Card => "card",
            Detector::Imei => "imei",
            Detector::Phone => "phone",
            Detector::Date => "date",
            Detector::Vin => "vin",
            Detector::Mac => "mac",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Address => "address",
            Detector::Zip => "zip",
            Detector::Name => "name",
        }
    }

    /// The typed placeholder the `redact` rule writes in place of a span.
    pub fn placeholder(self) -> String {
        format!("[{}]", self.name().to_uppercase())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub detector: Detector,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("MRN pattern {index} is not a valid regular expression: {message}")]
    Pattern { index: usize, message: String },
}

/// Compiled detectors. Build once, share.
pub struct Scanner {
    patterns: Vec<(Detector, Regex)>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scanner({} patterns)", self.patterns.len())
    }
}

/// Default MRN shapes: an `MRN` label followed by 6–10 digits.
pub const DEFAULT_MRN_PATTERNS: &[&str] = &[r"(?i)(?-u:\b)MRN[-:# ]?\d{6,10}(?-u:\b)"];

fn re(s: &str) -> Regex {
    Regex::new(s).expect("built-in pattern compiles")
}

impl Scanner {
    /// A scanner with the default MRN patterns.
    pub fn standard() -> Self {
        Self::new(&[]).expect("built-in patterns compile")
    }

    /// A scanner whose MRN detector uses `mrn_patterns` (regular expressions) in addition to the
    /// defaults.
    pub fn new(mrn_patterns: &[String]) -> Result<Self, ScanError> {
        let mut patterns = vec![
            (
                Detector::Email,
                re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            ),
            (
                Detector::Url,
                re(r#"(?-u:\b)(?:https?://|www\.)[^\s<>"']+"#),
            ),
            (
                Detector::Ssn,
                re(r"(?-u:\b)\d{3}[- ]\d{2}[- ]\d{4}(?-u:\b)|(?-u:\b)\d{9}(?-u:\b)"),
            ),
            (Detector::Npi, re(r"(?-u:\b)[12]\d{9}(?-u:\b)")),
            (Detector::Card, re(r"(?-u:\b)\d(?:[ -]?\d){12,18}(?-u:\b)")),
            (Detector::Imei, re(r"(?-u:\b)\d{15}(?-u:\b)")),
            (
                Detector::Phone,
                re(
                    r"(?:\+1[\s.-]?)?(?:\([2-9]\d{2}\)|(?-u:\b)[2-9]\d{2})[\s.-]?[2-9]\d{2}[\s.-]?\d{4}(?-u:\b)",
                ),
            ),
            (
                Detector::Date,
                re(
                    r"(?i)(?-u:\b)\d{4}-\d{2}-\d{2}(?-u:\b)|(?-u:\b)\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})(?-u:\b)|(?-u:\b)(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.? \d{1,2},? \d{4}(?-u:\b)",
                ),
            ),
            (Detector::Vin, re(r"(?-u:\b)[A-HJ-NPR-Z0-9]{17}(?-u:\b)")),
            (
                Detector::Mac,
                re(r"(?-u:\b)[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?-u:\b)"),
            ),
            (
                Detector::Ipv4,
                re(r"(?-u:\b)(?:\d{1,3}\.){3}\d{1,3}(?-u:\b)"),
            ),
            (
                Detector::Ipv6,
                re(r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"),
            ),
            (
                Detector::Address,
                re(
                    r"(?-u:\b)\d{1,6}\s+(?:[A-Z][A-Za-z]+\s+){1,3}(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Ln|Lane|Dr|Drive|Ct|Court|Way|Pl|Place|Hwy)(?-u:\b)\.?",
                ),
            ),
            (Detector::Zip, re(r"(?-u:\b)\d{5}(?:-\d{4})?(?-u:\b)")),
        ];
        for p in DEFAULT_MRN_PATTERNS {
            patterns.push((Detector::Mrn, re(p)));
        }
        for (index, p) in mrn_patterns.iter().enumerate() {
            let r = Regex::new(p).map_err(|e| ScanError::Pattern {
                index,
                message: e.to_string(),
            })?;
            patterns.push((Detector::Mrn, r));
        }
        Ok(Scanner { patterns })
    }

    /// Every validated detector hit in `text`, non-overlapping (earlier, then longer, then more
    /// specific detectors win).
    pub fn spans(&self, text: &str) -> Vec<Span> {
        let mut all = Vec::new();
        // Cheap prefilters: most detectors need a digit, e-mails an @, URLs a scheme or www.
        let has_digit = text.bytes().any(|b| b.is_ascii_digit());
        let has_at = text.contains('@');
        let has_url = text.contains("http") || text.contains("www.");
        let has_sep = text.contains(':') || text.contains('-');
        for (detector, regex) in &self.patterns {
            let possible = match detector {
                Detector::Email => has_at,
                Detector::Url => has_url,
                Detector::Ipv6 | Detector::Mac => has_sep,
                Detector::Mrn | Detector::Name => true,
                _ => has_digit,
            };
            if !possible {
                continue;
            }
            for m in regex.find_iter(text) {
                if validate(*detector, m.as_str()) {
                    all.push(Span {
                        start: m.start(),
                        end: m.end(),
                        detector: *detector,
                    });
                }
            }
        }
        name_spans(text, &mut all);
        all.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then((b.end - b.start).cmp(&(a.end - a.start)))
                .then(a.detector.cmp(&b.detector))
        });
        let mut out: Vec<Span> = Vec::with_capacity(all.len());
        for s in all {
            if out.last().is_none_or(|l| s.start >= l.end) {
                out.push(s);
            }
        }
        out
    }

    /// Which detectors fire on `text` (the whole value), as a set.
    pub fn detect(&self, text: &str) -> Vec<Detector> {
        let mut d: Vec<Detector> = self.spans(text).iter().map(|s| s.detector).collect();
        d.sort();
        d.dedup();
        d
    }

    /// True when one detector covers the whole value (trimmed): the value *is* an SSN, a phone…
    pub fn whole_value(&self, text: &str) -> Option<Detector> {
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        let offset = text.len() - text.trim_start().len();
        let spans = self.spans(t);
        match spans.as_slice() {
            [s] if s.start == 0 && s.end == t.len() => Some(s.detector),
            _ => {
                // A name of several words is a run of name spans separated by spaces.
                let names = spans.iter().all(|s| s.detector == Detector::Name)
                    && !spans.is_empty()
                    && t.split_whitespace().count() == spans.len();
                let _ = offset;
                names.then_some(Detector::Name)
            }
        }
    }

    /// High-precision detectors that fire in a value (for the in-flight scan of safe columns;
    /// dates, ZIPs, names and addresses are too common in safe text to hold a stream on).
    pub fn strong_hits(&self, text: &str) -> Vec<Detector> {
        let mut d: Vec<Detector> = self
            .spans(text)
            .iter()
            .map(|s| s.detector)
            .filter(|d| {
                matches!(
                    d,
                    Detector::Ssn
                        | Detector::Email
                        | Detector::Phone
                        | Detector::Mrn
                        | Detector::Npi
                        | Detector::Card
                        | Detector::Ipv4
                        | Detector::Ipv6
                        | Detector::Vin
                        | Detector::Mac
                        | Detector::Imei
                )
            })
            .collect();
        d.sort();
        d.dedup();
        d
    }

    /// Replaces every span with its placeholder.
    pub fn redact(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for s in self.spans(text) {
            out.push_str(&text[at..s.start]);
            out.push_str(&s.detector.placeholder());
            at = s.end;
        }
        out.push_str(&text[at..]);
        out
    }
}

fn name_spans(text: &str, out: &mut Vec<Span>) {
    let mut start = None;
    let bytes_end = text.len();
    let mut push = |s: usize, e: usize| {
        let w = &text[s..e];
        let cased = w.chars().next().is_some_and(|c| c.is_uppercase())
            || w.chars().next().is_some_and(|c| !c.is_lowercase());
        if cased && crate::surrogate::is_known_name(w) {
            out.push(Span {
                start: s,
                end: e,
                detector: Detector::Name,
            });
        }
    };
    for (i, c) in text.char_indices() {
        let w = c.is_alphabetic() || c == '\'' || matches!(c as u32, 0x300..=0x36F);
        match (w, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                push(s, i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        push(s, bytes_end);
    }
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// Luhn validity of a digit sequence (check digit last).
pub fn luhn_valid(d: &[u32]) -> bool {
    let mut sum = 0;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut v = x;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !d.is_empty() && sum % 10 == 0
}

fn validate(detector: Detector, m: &str) -> bool {
    match detector {
        Detector::Ssn => {
            let d = digits(m);
            if d.len() != 9 {
                return false;
            }
            let area = d[0] * 100 + d[1] * 10 + d[2];
            let group = d[3] * 10 + d[4];
            let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
            area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
        }
        Detector::Npi => {
            let mut d = vec![8, 0, 8, 4, 0];
            d.extend(digits(m));
            luhn_valid(&d)
        }
        Detector::Card => {
            let d = digits(m);
            let brand_len = match (d[0], d.get(1).copied().unwrap_or(0)) {
                (4, _) => matches!(d.len(), 13 | 16 | 19),          // Visa
                (3, 4 | 7) => d.len() == 15,                        // Amex
                (3, 0 | 6 | 8 | 9) => (14..=16).contains(&d.len()), // Diners
                (5, 1..=5) | (2, 2..=7) => d.len() == 16,           // Mastercard
                (6, _) => (16..=19).contains(&d.len()),             // Discover, others
                _ => false,
            };
            brand_len && luhn_valid(&d)
        }
        Detector::Imei => luhn_valid(&digits(m)),
        Detector::Date => {
            let parts: Vec<u32> = m
                .split(|c: char| !c.is_ascii_digit())
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.parse().ok())
                .collect();
            if m.contains('-') {
                parts.len() == 3 && (1..=12).contains(&parts[1]) && (1..=31).contains(&parts[2])
            } else if m.contains('/') {
                parts.len() == 3 && (1..=12).contains(&parts[0]) && (1..=31).contains(&parts[1])
            } else {
                true
            }
        }
        Detector::Vin => vin_valid(m),
        Detector::Ipv4 => m
            .split('.')
            .all(|o| o.parse::<u32>().is_ok_and(|v| v <= 255)),
        Detector::Ipv6 => m.matches(':').count() >= 2 && m.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

fn vin_valid(v: &str) -> bool {
    let has_digit = v.chars().any(|c| c.is_ascii_digit());
    let has_letter = v.chars().any(|c| c.is_ascii_uppercase());
    if !(has_digit && has_letter) {
        return false;
    }
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let value = |c: char| -> u32 {
        match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A' | 'J' => 1,
            'B' | 'K' | 'S' => 2,
            'C' | 'L' | 'T' => 3,
            'D' | 'M' | 'U' => 4,
            'E' | 'N' | 'V' => 5,
            'F' | 'W' => 6,
            'G' | 'P' | 'X' => 7,
            'H' | 'Y' => 8,
            'R' | 'Z' => 9,
            _ => 0,
        }
    };
    let sum: u32 = v.chars().zip(WEIGHTS).map(|(c, w)| value(c) * w).sum();
    let check = match sum % 11 {
        10 => 'X',
        n => char::from_digit(n, 10).unwrap_or('?'),
    };
    v.chars().nth(8) == Some(check)
}

/// What a column's name suggests, if anything. Short abbreviations must be whole words of the
/// name (`pan`, not `company`); longer words may be parts (`patient_email`).
pub fn column_name_hint(column: &str) -> Option<Detector> {
    let c = column.to_lowercase();
    let words: Vec<&str> = c.split(|ch: char| !ch.is_ascii_alphanumeric()).collect();
    let word = |ws: &[&str]| ws.iter().any(|w| words.contains(w));
    let part = |ws: &[&str]| ws.iter().any(|w| c.contains(w));
    Some(
        if word(&["ssn", "sin"]) || part(&["social_sec", "socialsec"]) {
            Detector::Ssn
        } else if part(&["email", "e_mail"]) {
            Detector::Email
        } else if word(&["tel", "fax", "phone", "mobile", "cell"]) || part(&["phone", "mobile"]) {
            Detector::Phone
        } else if word(&["mrn"]) || part(&["medical_record", "chart_no"]) {
            Detector::Mrn
        } else if word(&["npi"]) {
            Detector::Npi
        } else if word(&["pan", "card", "cc"])
            || part(&["card_number", "account_no", "account_number"])
        {
            Detector::Card
        } else if word(&["dob", "dod"]) || part(&["birth", "death", "admit", "discharge"]) {
            Detector::Date
        } else if word(&["zip", "postal", "postcode", "zipcode"]) {
            Detector::Zip
        } else if part(&["street", "address", "city", "town", "county"]) || word(&["addr"]) {
            Detector::Address
        } else if word(&["ip"]) || part(&["ip_addr", "ipaddr", "ip_address", "client_ip"]) {
            Detector::Ipv4
        } else if word(&["url", "website", "homepage", "uri"]) {
            Detector::Url
        } else if word(&["vin"]) {
            Detector::Vin
        } else if word(&["imei", "mac", "udid"])
            || part(&["device_id", "serial_no", "serial_number"])
        {
            Detector::Imei
        } else if part(&["name", "surname"]) || word(&["first", "last", "given", "family"]) {
            Detector::Name
        } else {
            return None;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &str) -> Option<Detector> {
        Scanner::standard().whole_value(s)
    }

    #[test]
    fn detectors_validate() {
        assert_eq!(whole("123-45-6789"), Some(Detector::Ssn));
        assert_ne!(whole("666-45-6789"), Some(Detector::Ssn));
        assert_ne!(whole("900-45-6789"), Some(Detector::Ssn));
        assert_ne!(whole("123-00-6789"), Some(Detector::Ssn));
        assert_eq!(whole("(617) 555-0123"), Some(Detector::Phone));
        assert_eq!(whole("+1 617.555.0123"), Some(Detector::Phone));
        assert_eq!(whole("a.b+c@mail.example"), Some(Detector::Email));
        assert_eq!(whole("MRN00012345"), Some(Detector::Mrn));
        assert_eq!(whole("1234567893"), Some(Detector::Npi));
        assert_ne!(whole("1234567890"), Some(Detector::Npi));
        assert_eq!(whole("4111 1111 1111 1111"), Some(Detector::Card));
        assert_ne!(whole("4111 1111 1111 1112"), Some(Detector::Card));
        assert_eq!(whole("2024-02-29"), Some(Detector::Date));
        assert_eq!(whole("3/14/1961"), Some(Detector::Date));
        assert_eq!(whole("March 4, 2001"), Some(Detector::Date));
        assert_eq!(whole("02139-4307"), Some(Detector::Zip));
        assert_eq!(whole("192.168.0.17"), Some(Detector::Ipv4));
        assert_ne!(whole("999.1.1.1"), Some(Detector::Ipv4));
        assert_eq!(whole("2001:db8::1"), Some(Detector::Ipv6));
        assert_eq!(whole("https://clinic.example/p/17"), Some(Detector::Url));
        assert_eq!(whole("1M8GDM9AXKP042788"), Some(Detector::Vin));
        assert_ne!(whole("1M8GDM9AYKP042788"), Some(Detector::Vin));
        assert_eq!(whole("00:1A:2b:3C:4d:5E"), Some(Detector::Mac));
        assert_eq!(whole("490154203237518"), Some(Detector::Imei));
        assert_eq!(whole("4521 Maple St"), Some(Detector::Address));
        assert_eq!(whole("Mary Smith"), Some(Detector::Name));
        assert_eq!(whole("山田 太郎"), Some(Detector::Name));
        assert_eq!(whole("cardiology"), None);
        assert_eq!(whole("8867-4"), None);
        assert_eq!(whole(""), None);
    }

    #[test]
    fn redacts_spans_with_placeholders() {
        let s = Scanner::standard();
        let r = s.redact(
            "seen for follow-up; patient García (SSN 123-45-6789, call (617) 555-0123) reports improvement 😀",
        );
        assert_eq!(
            r,
            "seen for follow-up; patient [NAME] (SSN [SSN], call [PHONE]) reports improvement 😀"
        );
        assert_eq!(s.redact("患者 山田 は回復"), "患者 [NAME] は回復");
        assert_eq!(s.redact(""), "");
    }

    #[test]
    fn bad_mrn_pattern_is_named() {
        let e = Scanner::new(&["(".into()]).unwrap_err().to_string();
        assert!(e.contains("MRN pattern 0"), "{e}");
    }

    #[test]
    fn column_names() {
        assert_eq!(column_name_hint("patient_ssn"), Some(Detector::Ssn));
        assert_eq!(column_name_hint("given_name"), Some(Detector::Name));
        assert_eq!(column_name_hint("specialty"), None);
        assert_eq!(column_name_hint("company"), None);
        assert_eq!(column_name_hint("pan"), Some(Detector::Card));
        assert_eq!(column_name_hint("home_city"), Some(Detector::Address));
        assert_eq!(column_name_hint("started_on"), None);
    }
}
