//! Date and place generalizations: the keyed per-entity `date_shift`, shifting PostgreSQL's
//! date/timestamp text forms (BC dates and zones kept), and Safe Harbor `zip3`.

use super::keys::*;
use crate::civil::{civil_from_days, days_from_civil};
use crate::pg::catalog::TypeClass;
use crate::registry::RESTRICTED_ZIP3;

/// The keyed offset of one entity, in days, in `[-max, -1] ∪ [1, max]` (never zero).
pub fn shift_days(key: &DomainKey, entity: &str, max_days: u32) -> i64 {
    let h = blake3::keyed_hash(&key.key, entity.as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    let max = u64::from(max_days.max(1));
    let k = (x % (2 * max)) as i64; // 0 .. 2max-1
    let max = max as i64;
    if k < max { k - max } else { k - max + 1 }
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

pub(super) fn fallback_date(
    key: &DomainKey,
    value: &str,
    class: &TypeClass,
) -> Result<String, DeidError> {
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
