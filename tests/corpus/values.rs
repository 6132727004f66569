//! Value generators for the evaluation corpus: the shapes real data has — names in several
//! scripts and with digits, licences, beneficiary numbers, UDIs, coordinates, and clinical codes
//! with valid check digits (SNOMED CT Verhoeff, LOINC mod 10, NPI and IMEI Luhn, DEA, GTIN, VIN).
//! Deterministic (seeded), so a run is repeatable. Every value is made up.

#![allow(dead_code)]

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    pub fn pick<'a, T: ?Sized>(&mut self, xs: &'a [&'a T]) -> &'a T {
        xs[self.below(xs.len() as u64) as usize]
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    pub fn letters(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'A' + self.below(26) as u8))
            .collect()
    }
}

/// A stable 64-bit hash (FNV-1a) for deterministic keys.
pub fn h64(ns: &str, i: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.bytes().chain(i.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The uuid of row `i` of key namespace `ns` (version 4 layout).
pub fn uuid_for(ns: &str, i: u64) -> String {
    let a = h64(ns, i);
    let b = h64(ns, i ^ 0x5555_5555);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

pub const GIVEN: &[&str] = &[
    "Maria",
    "James",
    "Aaliyah",
    "José",
    "Zoë",
    "Siobhán",
    "Mohammed",
    "Wei",
    "Yuki",
    "Olga",
    "Anna-Marie",
    "D'Andre",
    "Nguyễn Thị",
    "Ji-woo",
    "Priya",
    "Kwame",
    "Åsa",
    "Łukasz",
    "John",
    "Fatima",
    "Ngozi",
    "Mateo",
    "Chloé",
    "Björn",
    "Emily",
    "Hamza",
    "Sofía",
    "Liam",
    "Ava",
    "Noah",
    "Isabella",
    "Elijah",
    "Mia",
    "Lucas",
    "Harper",
    "Aiden",
    "Evelyn",
    "Jackson",
    "Ella",
    "花子",
    "太郎",
    "伟",
    "芳",
    "Анна",
    "Дмитрий",
    "محمد",
    "فاطمة",
    "민준",
    "서연",
];
pub const FAMILY: &[&str] = &[
    "Smith",
    "García",
    "O'Brien",
    "van der Berg",
    "Nguyen",
    "Müller",
    "Kowalski",
    "Okafor",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Rodríguez",
    "Martínez",
    "Hernández",
    "López",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Pérez",
    "Thompson",
    "White",
    "Harris",
    "Sánchez",
    "Clark",
    "Ramírez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Abernathy",
    "Schowalter",
    "Kuhlman",
    "Wehner",
    "山田",
    "佐藤",
    "王",
    "李",
    "Иванов",
    "Петрова",
    "الهاشمي",
    "김",
    "박",
];
pub const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Washington Blvd",
    "Lake Shore Dr",
    "Pine Rd",
    "Sunset Way",
    "Hillcrest Ct",
    "Mill Stream Rd",
    "Harbor View Ter",
    "Route 9",
];
pub const CITIES: &[&str] = &[
    "Springfield",
    "Boston",
    "Worcester",
    "Lowell",
    "Cambridge",
    "Quincy",
    "Fall River",
    "Newton",
    "Lynn",
    "Somerville",
    "Framingham",
    "Haverhill",
    "Waltham",
    "Malden",
    "Medford",
    "Taunton",
    "Chicopee",
    "Weymouth",
    "Revere",
    "Peabody",
    "Methuen",
    "Barnstable",
    "Pittsfield",
];
pub const COUNTIES: &[&str] = &[
    "Suffolk County",
    "Middlesex County",
    "Worcester County",
    "Essex County",
    "Norfolk County",
    "Plymouth County",
    "Bristol County",
    "Hampden County",
    "Barnstable County",
    "Berkshire County",
];
pub const STATES: &[&str] = &["MA", "NH", "RI", "CT", "NY", "VT", "ME"];

pub fn given(r: &mut Rng) -> String {
    r.pick(GIVEN).to_owned()
}
pub fn family(r: &mut Rng) -> String {
    let f = r.pick(FAMILY).to_owned();
    // Synthea-style exports append digits to names.
    if r.chance(0.15) {
        format!("{f}{}", r.range(100, 999))
    } else {
        f
    }
}
pub fn full_name(r: &mut Rng) -> String {
    format!("{} {}", given(r), family(r))
}
/// DICOM person name: `FAMILY^GIVEN^MIDDLE^^`.
pub fn dicom_name(r: &mut Rng) -> String {
    format!("{}^{}", family(r).to_uppercase(), given(r).to_uppercase())
}
pub fn username(r: &mut Rng) -> String {
    let g: String = given(r)
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .take(1)
        .collect::<String>()
        .to_lowercase();
    let f: String = family(r)
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_lowercase();
    format!("{g}{f}{}", r.range(1950, 2010))
}
pub fn email(r: &mut Rng) -> String {
    let domains = [
        "gmail.com",
        "yahoo.com",
        "outlook.com",
        "mail.example.org",
        "comcast.net",
    ];
    format!("{}@{}", username(r), r.pick(&domains))
}
pub fn street(r: &mut Rng) -> String {
    let apt = if r.chance(0.3) {
        format!(" Apt {}", r.range(1, 40))
    } else {
        String::new()
    };
    format!("{} {}{apt}", r.range(1, 9999), r.pick(STREETS))
}
pub fn zip5(r: &mut Rng) -> String {
    format!("0{}", r.range(1001, 2791))
}
pub fn lat(r: &mut Rng) -> String {
    format!("{:.6}", 41.2 + r.below(1_800_000) as f64 / 1e6)
}
pub fn lon(r: &mut Rng) -> String {
    format!("{:.6}", -73.5 + r.below(3_500_000) as f64 / 1e6)
}
pub fn phone(r: &mut Rng) -> String {
    let (a, b, c) = (r.range(201, 989), r.range(200, 999), r.digits(4));
    match r.below(4) {
        0 => format!("({a}) {b}-{c}"),
        1 => format!("{a}-{b}-{c}"),
        2 => format!("+1 {a} {b} {c}"),
        _ => format!("{a}.{b}.{c}"),
    }
}
pub fn ssn(r: &mut Rng) -> String {
    let s = format!("{:03}{:02}{}", r.range(1, 665), r.range(1, 99), r.digits(4));
    if r.chance(0.5) {
        format!("{}-{}-{}", &s[..3], &s[3..5], &s[5..])
    } else {
        s
    }
}
/// Driver's licence numbers in several states' layouts.
pub fn licence(r: &mut Rng) -> String {
    match r.below(4) {
        0 => format!("S{}", r.digits(8)),
        1 => format!("{}{}", r.letters(1), r.digits(7)),
        2 => format!("{}-{}-{}", r.letters(1), r.digits(3), r.digits(5)),
        _ => r.digits(9),
    }
}
pub fn passport(r: &mut Rng) -> String {
    format!("X{}", r.digits(8))
}
/// Medicare Beneficiary Identifier layout (11 characters, no S L O I B Z).
pub fn mbi(r: &mut Rng) -> String {
    let al = b"ACDEFGHJKMNPQRTUVWXY";
    let a = |r: &mut Rng| char::from(al[r.below(al.len() as u64) as usize]);
    let d = |r: &mut Rng| char::from(b'0' + r.below(10) as u8);
    let first = char::from(b'1' + r.below(9) as u8);
    format!(
        "{first}{}{}{}{}{}{}{}{}{}{}",
        a(r),
        if r.chance(0.5) { a(r) } else { d(r) },
        d(r),
        a(r),
        if r.chance(0.5) { a(r) } else { d(r) },
        d(r),
        a(r),
        a(r),
        d(r),
        d(r)
    )
}
pub fn member_id(r: &mut Rng) -> String {
    format!("{}{}", r.letters(3), r.digits(9))
}
pub fn account_no(r: &mut Rng) -> String {
    format!("{}-{}", r.digits(4), r.digits(8))
}
pub fn mrn(r: &mut Rng) -> String {
    match r.below(3) {
        0 => format!("MRN{}", r.digits(7)),
        1 => format!("{:08}", r.below(99_999_999)),
        _ => format!("E{}", r.digits(6)),
    }
}
fn luhn_digit(payload: &str) -> u32 {
    let mut sum = 0;
    for (i, c) in payload.chars().rev().enumerate() {
        let mut d = c.to_digit(10).unwrap_or(0);
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    (10 - sum % 10) % 10
}
/// NPI: 10 digits, Luhn over "80840" + the first nine.
pub fn npi(r: &mut Rng) -> String {
    let body = format!("{}{}", 1 + r.below(2), r.digits(8));
    let check = luhn_digit(&format!("80840{body}"));
    format!("{body}{check}")
}
pub fn imei(r: &mut Rng) -> String {
    let body = format!("35{}", r.digits(12));
    format!("{body}{}", luhn_digit(&body))
}
pub fn mac(r: &mut Rng) -> String {
    (0..6)
        .map(|_| format!("{:02x}", r.below(256)))
        .collect::<Vec<_>>()
        .join(":")
}
pub fn ipv4(r: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        r.range(11, 223),
        r.below(256),
        r.below(256),
        r.range(1, 254)
    )
}
pub fn ipv6(r: &mut Rng) -> String {
    format!(
        "2001:db8:{:x}:{:x}::{:x}",
        r.below(65536),
        r.below(65536),
        r.range(1, 65535)
    )
}
/// DEA registration number: two letters and seven digits with the DEA check digit.
pub fn dea(r: &mut Rng) -> String {
    let d: Vec<u32> = (0..6).map(|_| r.below(10) as u32).collect();
    let check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10;
    format!(
        "{}{}{}{check}",
        r.pick(&["A", "B", "F", "M"]),
        r.letters(1),
        d.iter().map(|x| x.to_string()).collect::<String>()
    )
}
fn gtin_check(body: &str) -> u32 {
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| c.to_digit(10).unwrap_or(0) * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    (10 - sum % 10) % 10
}
/// GS1 UDI: (01) GTIN-14 with its check digit, (17) expiry, (10) lot, (21) serial.
pub fn udi_gs1(r: &mut Rng) -> String {
    let body = format!("0{}", r.digits(12));
    format!(
        "(01){body}{}(17){:02}{:02}{:02}(10){}{}(21){}",
        gtin_check(&body),
        r.range(24, 30),
        r.range(1, 12),
        r.range(1, 28),
        r.letters(1),
        r.digits(5),
        r.digits(8)
    )
}
/// HIBCC UDI: `+` labeler, product, unit of measure, `/$$` expiry and lot, check character.
pub fn udi_hibcc(r: &mut Rng) -> String {
    format!(
        "+H{}{}{}/$${}{}{}",
        r.digits(3),
        r.letters(2),
        r.digits(3),
        r.digits(4),
        r.letters(3),
        r.digits(3)
    )
}
pub fn serial(r: &mut Rng) -> String {
    format!("SN-{}{}", r.letters(2), r.digits(7))
}
const VIN_CHARS: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
/// VIN with a valid check digit (position 9).
pub fn vin(r: &mut Rng) -> String {
    let mut v: Vec<u8> = (0..17)
        .map(|_| VIN_CHARS[r.below(VIN_CHARS.len() as u64) as usize])
        .collect();
    let val = |c: u8| -> u32 {
        match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'H' => u32::from(c - b'A') + 1,
            b'J'..=b'N' => u32::from(c - b'J') + 1,
            b'P' => 7,
            b'R'..=b'Z' => u32::from(c - b'R') + 2,
            _ => 0,
        }
    };
    let w = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let sum: u32 = v.iter().zip(w).map(|(c, w)| val(*c) * w).sum();
    let check = sum % 11;
    v[8] = if check == 10 {
        b'X'
    } else {
        b'0' + check as u8
    };
    String::from_utf8(v).unwrap()
}
pub fn plate(r: &mut Rng) -> String {
    format!("{}{}{}", r.digits(1), r.letters(2), r.digits(3))
}

/// Verhoeff check digit (SNOMED CT identifiers).
fn verhoeff(num: &str) -> u32 {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    const INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];
    let mut c = 0usize;
    for (i, ch) in num.chars().rev().enumerate() {
        let d = ch.to_digit(10).unwrap_or(0) as usize;
        c = D[c][P[(i + 1) % 8][d] as usize] as usize;
    }
    u32::from(INV[c])
}

/// A SNOMED CT concept id: item id, partition `00`, Verhoeff check digit (6–18 digits; most
/// clinical findings and procedures have 8 or 9, like the SSN-length ones real exports carry).
pub fn snomed(r: &mut Rng) -> String {
    let item = r.range(1000, 9_999_999).to_string();
    let body = format!("{item}00");
    format!("{body}{}", verhoeff(&body))
}
/// A LOINC code: digits, `-`, mod-10 check digit.
pub fn loinc(r: &mut Rng) -> String {
    let body = r.range(1000, 99999).to_string();
    let check = luhn_digit(&body);
    format!("{body}-{check}")
}
pub fn icd10(r: &mut Rng) -> String {
    let cats = [
        "E11", "I10", "J45", "M54", "F32", "K21", "N39", "R51", "Z00", "C50", "S72",
    ];
    if r.chance(0.6) {
        format!("{}.{}", r.pick(&cats), r.range(0, 99))
    } else {
        r.pick(&cats).to_owned()
    }
}
/// NDC in the 11-digit 5-4-2 layout.
pub fn ndc(r: &mut Rng) -> String {
    format!("{}-{}-{}", r.digits(5), r.digits(4), r.digits(2))
}
pub fn hcpcs(r: &mut Rng) -> String {
    if r.chance(0.5) {
        format!("{}", r.range(99201, 99499))
    } else {
        format!("{}{}", r.pick(&["J", "G", "A", "E"]), r.digits(4))
    }
}
/// DICOM UIDs under an implementation's organisation root: study, series and instance UIDs
/// identify one patient's images.
pub fn dicom_uid(r: &mut Rng) -> String {
    format!(
        "1.2.840.113619.2.55.3.{}.{}.{}.{}",
        r.range(100_000_000, 999_999_999),
        r.range(100, 999),
        r.range(1_000_000_000, 1_999_999_999),
        r.range(1, 999)
    )
}
/// Standard SOP class UIDs (constants of the DICOM standard, not identifiers).
pub const SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.128",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.88.22",
];

/// A date between two years, `YYYY-MM-DD`.
pub fn date(r: &mut Rng, from: i64, to: i64) -> String {
    format!(
        "{}-{:02}-{:02}",
        r.range(from, to),
        r.range(1, 12),
        r.range(1, 28)
    )
}
pub fn timestamp(r: &mut Rng, from: i64, to: i64) -> String {
    format!(
        "{} {:02}:{:02}:{:02}+00",
        date(r, from, to),
        r.range(0, 23),
        r.range(0, 59),
        r.range(0, 59)
    )
}
pub fn bytes_hex(r: &mut Rng, n: usize) -> String {
    let mut s = String::from("\\x");
    for _ in 0..n {
        s.push_str(&format!("{:02x}", r.below(256)));
    }
    s
}
/// A clinician's free-text note that names the patient and a phone number.
pub fn note(r: &mut Rng) -> String {
    let templates = [
        "Pt {n} called re: refill, callback {p}",
        "Spoke with daughter {n}; reachable at {p}",
        "{n} reports improvement. Follow up in 2 weeks.",
        "Left voicemail for {n} at {p}",
    ];
    let t = r.pick(&templates);
    let n = full_name(r);
    let p = phone(r);
    t.replace("{n}", &n).replace("{p}", &p)
}
/// SQL text literal of a value (`NULL` for none).
pub fn lit(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_validate() {
        // Real SNOMED CT concept ids: myocardial infarction, diabetes mellitus, hypertension.
        assert_eq!(verhoeff("2229800"), 6);
        assert_eq!(verhoeff("7321100"), 9);
        assert_eq!(verhoeff("3834100"), 3);
        // LOINC 2345-7 (glucose) and 718-7 (hemoglobin).
        assert_eq!(luhn_digit("2345"), 7);
        assert_eq!(luhn_digit("718"), 7);
        let mut r = Rng::new(1);
        let n = npi(&mut r);
        assert_eq!(n.len(), 10);
        let v = vin(&mut r);
        assert_eq!(v.len(), 17);
    }
}
