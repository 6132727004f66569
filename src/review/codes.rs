//! Clinical code systems recognised by their own rules, which make a column safe: LOINC (mod-10
//! check digit), SNOMED CT (Verhoeff check digit and partition), DICOM standard UIDs, NDC; ICD-10
//! and HCPCS/CPT have no check digit and count only with a name that says so.

fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// LOINC: `NNNNN-C` with the mod-10 check digit.
pub fn is_loinc(v: &str) -> bool {
    let Some((body, check)) = v.split_once('-') else {
        return false;
    };
    !body.is_empty()
        && body.len() <= 6
        && check.len() == 1
        && body.bytes().all(|b| b.is_ascii_digit())
        && luhn_valid(&format!("{body}{check}"))
}

fn verhoeff_valid(num: &str) -> bool {
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
    let mut c = 0usize;
    for (i, ch) in num.chars().rev().enumerate() {
        let Some(d) = ch.to_digit(10) else {
            return false;
        };
        c = D[c][P[i % 8][d as usize] as usize] as usize;
    }
    c == 0
}

/// SNOMED CT concept id: 6–18 digits, partition `00`/`10` (concepts), Verhoeff check digit.
pub fn is_snomed(v: &str) -> bool {
    let n = v.len();
    (6..=18).contains(&n)
        && v.bytes().all(|b| b.is_ascii_digit())
        && !v.starts_with('0')
        && matches!(&v[n - 3..n - 1], "00" | "10")
        && verhoeff_valid(v)
}

/// ICD-10(-CM) code.
pub fn is_icd10(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_uppercase() || b[0] == b'U' {
        return false;
    }
    if !b[1].is_ascii_digit() || !(b[2].is_ascii_digit() || b[2].is_ascii_uppercase()) {
        return false;
    }
    match v.get(3..) {
        None | Some("") => true,
        Some(rest) => {
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            !rest.is_empty()
                && rest.len() <= 4
                && rest
                    .bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }
    }
}

/// NDC in a 4-4-2, 5-3-2, 5-4-1 or 5-4-2 layout.
pub fn is_ndc(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 3
        && matches!(
            (parts[0].len(), parts[1].len(), parts[2].len()),
            (4, 4, 2) | (5, 3, 2) | (5, 4, 1) | (5, 4, 2)
        )
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// HCPCS level II (`J1234`) or CPT (`99213`).
pub fn is_hcpcs(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 5
        && (b.iter().all(|c| c.is_ascii_digit())
            || (b[0].is_ascii_uppercase() && b[1..].iter().all(|c| c.is_ascii_digit())))
}

/// A DICOM UID of the standard itself (SOP classes, transfer syntaxes): a constant, not an
/// identifier.
pub fn is_dicom_standard_uid(v: &str) -> bool {
    v.starts_with("1.2.840.10008.")
}

/// Which code system, if any, recognises at least 90% of the sample.
pub fn code_system(values: &[String], column_words: &[String]) -> Option<&'static str> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let share = |f: fn(&str) -> bool| values.iter().filter(|v| f(v)).count() as f64 / n as f64;
    let named = |ws: &[&str]| column_words.iter().any(|w| ws.contains(&w.as_str()));
    if share(is_loinc) >= 0.9 {
        return Some("LOINC");
    }
    if share(is_snomed) >= 0.9 {
        return Some("SNOMED CT");
    }
    if share(is_dicom_standard_uid) >= 0.9 {
        return Some("DICOM standard UID");
    }
    if share(is_ndc) >= 0.9 {
        return Some("NDC");
    }
    // No check digit: only with a name that says so (an MRN like `E123456` has the ICD shape).
    let digits_only =
        |v: &str| (10..=11).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit());
    if named(&["ndc"]) && share(digits_only) >= 0.9 {
        return Some("NDC");
    }
    if share(is_icd10) >= 0.9
        && named(&[
            "icd",
            "icd10",
            "dx",
            "dgns",
            "diag",
            "diagnosis",
            "code",
            "cd",
        ])
    {
        return Some("ICD-10");
    }
    if share(is_hcpcs) >= 0.9 && named(&["hcpcs", "cpt", "proc", "procedure", "code", "cd"]) {
        return Some("HCPCS/CPT");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_systems_validate() {
        assert!(is_loinc("2345-7") && is_loinc("718-7") && !is_loinc("2345-6"));
        assert!(is_snomed("22298006") && is_snomed("73211009") && is_snomed("38341003"));
        assert!(!is_snomed("123456789") && !is_snomed("22298007"));
        assert!(is_icd10("E11.9") && is_icd10("I10") && !is_icd10("123"));
        assert!(is_ndc("12345-6789-01") && !is_ndc("123-45-6789"));
        assert!(is_dicom_standard_uid("1.2.840.10008.5.1.4.1.1.2"));
        assert!(!is_dicom_standard_uid("1.2.840.113619.2.55.3.1"));
    }

    #[test]
    fn icd_needs_a_name_hint_so_mrns_never_pass_as_codes() {
        let mrns: Vec<String> = (0..50)
            .map(|i| format!("E{:06}", 100_000 + i * 7))
            .collect();
        assert_eq!(code_system(&mrns, &["patient".into(), "mrn".into()]), None);
        let icd: Vec<String> = ["E11.9", "I10", "J45.20"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            code_system(&icd, &["icd".into(), "cd".into()]),
            Some("ICD-10")
        );
    }
}
