//! Identifier shapes the outbound scanner does not look for, recognised by content alone (no
//! name needed): device identifiers (UDIs, GS1 with the GTIN check digit and HIBCC) and
//! coordinates finer than about 1 km.

/// GS1 check digit of a GTIN body (weights 3, 1, … from the right).
fn gtin_check(body: &str) -> Option<u32> {
    let mut sum = 0;
    for (i, c) in body.chars().rev().enumerate() {
        sum += c.to_digit(10)? * if i % 2 == 0 { 3 } else { 1 };
    }
    Some((10 - sum % 10) % 10)
}

/// A GS1 UDI: `(01)` and a GTIN-14 whose check digit is right (bare `01…` with a second
/// application identifier after it, as scanners print it, too).
pub fn is_gs1_udi(v: &str) -> bool {
    let v = v.trim();
    let gtin = if let Some(rest) = v.strip_prefix("(01)") {
        rest.get(..14)
    } else if let Some(rest) = v.strip_prefix("01") {
        // Bare form: a GTIN-14 then another AI (expiry 17, lot 10, serial 21, made 11).
        rest.get(..14).filter(|_| {
            ["17", "10", "21", "11"]
                .iter()
                .any(|ai| rest[14..].starts_with(ai))
        })
    } else {
        None
    };
    let Some(gtin) = gtin else { return false };
    gtin.bytes().all(|b| b.is_ascii_digit())
        && gtin_check(&gtin[..13]) == gtin[13..].chars().next().and_then(|c| c.to_digit(10))
}

/// A HIBCC UDI: `+`, a labeler code (a letter and three letters or digits), product and unit
/// of measure, optionally `/` and the secondary data; only HIBCC's character set.
pub fn is_hibcc_udi(v: &str) -> bool {
    let v = v.trim();
    let Some(rest) = v.strip_prefix('+') else {
        return false;
    };
    let b = rest.as_bytes();
    (7..=70).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b[1..4]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || b"-. $/+%".contains(c))
        && !b.contains(&b' ')
}

pub fn is_udi(v: &str) -> bool {
    is_gs1_udi(v) || is_hibcc_udi(v)
}

/// Decimal places of a number's text form.
fn decimals(v: &str) -> usize {
    v.split_once('.').map(|(_, d)| d.len()).unwrap_or(0)
}

/// One coordinate finer than about 1 km: a number within ±180 with four or more decimals.
fn is_fine_degree(v: &str) -> bool {
    let v = v.trim();
    v.parse::<f64>()
        .is_ok_and(|x| x.is_finite() && x.abs() <= 180.0 && decimals(v) >= 4)
}

/// A coordinate pair in text: `lat,lon`, `lat lon`, `POINT(lon lat)`, `(lon,lat)`.
fn is_coordinate_pair(v: &str) -> bool {
    let t = v
        .trim()
        .trim_start_matches("SRID=4326;")
        .trim_start_matches("POINT")
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')');
    let parts: Vec<&str> = t
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    parts.len() == 2 && parts.iter().all(|p| is_fine_degree(p))
}

/// Whether a sample reads as coordinates: at least 90% fine degrees or coordinate pairs, and
/// mostly distinct (a constant with many decimals is a factor, not a place).
pub fn coordinates(values: &[String]) -> bool {
    let n = values.len();
    if n < 10 {
        return false;
    }
    let hits = values
        .iter()
        .filter(|v| is_fine_degree(v) || is_coordinate_pair(v))
        .count();
    let distinct = values
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    hits * 10 >= n * 9 && distinct * 2 >= n
}

/// Whether a sample reads as UDIs (at least half of it).
pub fn udis(values: &[String]) -> bool {
    !values.is_empty() && values.iter().filter(|v| is_udi(v)).count() * 2 >= values.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udis_by_their_structure() {
        // GTIN-14 00812345678901 has check digit 1.
        assert!(is_gs1_udi("(01)00812345678901(17)270101(10)A123(21)99"));
        assert!(is_gs1_udi("010081234567890117270101"));
        assert!(!is_gs1_udi("(01)00812345678903(17)270101"));
        assert!(!is_gs1_udi("0100812345678901"));
        assert!(is_hibcc_udi("+H123AB456/$$2612ABC789"));
        assert!(!is_hibcc_udi("+1 617 555 0100"));
        assert!(!is_hibcc_udi("+h12"));
    }

    #[test]
    fn coordinates_finer_than_a_kilometre() {
        let lat: Vec<String> = (0..50)
            .map(|i| format!("{:.6}", 42.1 + i as f64 * 0.0137))
            .collect();
        assert!(coordinates(&lat));
        let pairs: Vec<String> = (0..50)
            .map(|i| format!("POINT(-71.{:04} 42.{:04})", 1000 + i * 7, 2000 + i * 3))
            .collect();
        assert!(coordinates(&pairs));
        // Two decimals (about 1 km) is not finer; measurements out of range are not places.
        let coarse: Vec<String> = (0..50)
            .map(|i| format!("{:.2}", 42.0 + i as f64 * 0.01))
            .collect();
        assert!(!coordinates(&coarse));
        let big: Vec<String> = (0..50)
            .map(|i| format!("{:.4}", 300.0 + i as f64))
            .collect();
        assert!(!coordinates(&big));
    }
}
