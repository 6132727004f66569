//! What a column's name says: whole words (snake_case, camelCase and digits split) looked up in a
//! dictionary per Safe Harbor identifier class, and the words that mark a thing rather than a
//! person (an organisation, a station, a code).

/// The 18 identifier classes of 45 CFR 164.514(b)(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdClass {
    Names,
    Geography,
    Dates,
    Phone,
    Fax,
    Email,
    Ssn,
    Mrn,
    HealthPlan,
    Account,
    Licence,
    Vehicle,
    Device,
    Url,
    Ip,
    Biometric,
    Photo,
    OtherId,
}

impl IdClass {
    pub fn name(self) -> &'static str {
        match self {
            IdClass::Names => "names",
            IdClass::Geography => "geography",
            IdClass::Dates => "dates",
            IdClass::Phone => "phone",
            IdClass::Fax => "fax",
            IdClass::Email => "email",
            IdClass::Ssn => "ssn",
            IdClass::Mrn => "mrn",
            IdClass::HealthPlan => "health_plan",
            IdClass::Account => "account",
            IdClass::Licence => "licence",
            IdClass::Vehicle => "vehicle",
            IdClass::Device => "device",
            IdClass::Url => "url",
            IdClass::Ip => "ip",
            IdClass::Biometric => "biometric",
            IdClass::Photo => "photo",
            IdClass::OtherId => "other_id",
        }
    }
}

/// The words of a column name: `bene_1st_nm` → bene, 1st, nm; `patientBirthDate` → patient,
/// birth, date.
pub fn words(column: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev: Option<char> = None;
    for ch in column.chars() {
        let split = !ch.is_alphanumeric()
            || (ch.is_uppercase() && prev.is_some_and(|p| p.is_lowercase()))
            || (ch.is_ascii_digit() != prev.is_some_and(|p| p.is_ascii_digit())
                && prev.is_some_and(|p| p.is_alphanumeric())
                && !(prev.is_some_and(|p| p.is_ascii_digit()) && ch.is_alphabetic()));
        if split && !cur.is_empty() {
            out.push(std::mem::take(&mut cur).to_lowercase());
        }
        if ch.is_alphanumeric() {
            cur.push(ch);
        }
        prev = Some(ch);
    }
    if !cur.is_empty() {
        out.push(cur.to_lowercase());
    }
    out
}

/// What a column's name says: an identifier class, or "safe kind" (organisation, state, code,
/// count…), or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameHint {
    Id(IdClass),
    /// The name says this is about an organisation, a code system, a state, a quantity.
    SafeKind,
}

pub fn name_hint(column: &str) -> Option<NameHint> {
    let ws = words(column);
    let has = |list: &[&str]| ws.iter().any(|w| list.contains(&w.as_str()));
    let joined = ws.join("_");
    let part = |list: &[&str]| list.iter().any(|p| joined.contains(p));
    use IdClass::*;
    // Organisations, code systems and the state are not about a person.
    if has(&[
        "org",
        "organization",
        "organisation",
        "facility",
        "hospital",
        "institution",
        "manufacturer",
        "vendor",
        "payer",
        "st",
        "state",
    ]) && !has(&["npi", "id", "num", "number"])
    {
        return Some(NameHint::SafeKind);
    }
    // "station_name", "drug_name": the name of a thing, not of a person.
    if has(&["name", "nm"])
        && has(&[
            "station",
            "host",
            "file",
            "drug",
            "product",
            "brand",
            "test",
            "panel",
            "model",
            "device",
            "plan",
            "program",
            "study",
            "series",
            "unit",
            "department",
            "dept",
            "site",
            "ward",
            "room",
            "service",
            "procedure",
            "proc",
            "generic",
            "display",
            "table",
        ])
    {
        return Some(NameHint::SafeKind);
    }
    // Amounts and counts are not identifiers, whatever abbreviation sits beside them
    // (`clm_pmt_amt_ip`: a payment amount of an inpatient claim, not an IP address).
    if has(&[
        "amt", "amount", "pmt", "payment", "paid", "cost", "charge", "chrg", "price", "fee", "bal",
        "balance", "qty", "quantity", "count", "cnt", "total", "tot",
    ]) && !has(&[
        "ssn", "id", "npi", "num", "number", "nbr", "no", "mrn", "key",
    ]) {
        return Some(NameHint::SafeKind);
    }
    let class = if has(&["ssn", "social"]) {
        Ssn
    } else if has(&["email", "mail", "e_mail"]) || part(&["e_mail"]) {
        Email
    } else if has(&["fax"]) {
        Fax
    } else if has(&[
        "phone",
        "phne",
        "tel",
        "telephone",
        "mobile",
        "cell",
        "msisdn",
    ]) {
        Phone
    } else if has(&["mrn", "chart"]) || part(&["medical_record", "patient_id"]) {
        Mrn
    } else if has(&[
        "mbi",
        "hicn",
        "member",
        "mbr",
        "subscriber",
        "cardholder",
        "policy",
        "insured",
        "beneficiary",
    ]) {
        HealthPlan
    } else if has(&[
        "account", "acct", "iban", "routing", "chk", "cheque", "check",
    ]) {
        Account
    } else if has(&[
        "licence",
        "license",
        "driver",
        "drivers",
        "dl",
        "passport",
        "dea",
        "certificate",
        "cert",
    ]) {
        Licence
    } else if has(&["vin", "plate"]) {
        Vehicle
    } else if has(&["udi", "serial", "imei", "mac", "udid", "meid"]) {
        Device
    } else if has(&["url", "uri", "website", "homepage", "link", "href"]) {
        Url
    } else if has(&["ip", "inet"]) {
        Ip
    } else if has(&[
        "fingerprint",
        "biometric",
        "retina",
        "iris",
        "voiceprint",
        "faceprint",
    ]) {
        Biometric
    } else if has(&["photo", "image", "picture", "avatar", "selfie", "portrait"]) {
        Photo
    } else if has(&[
        "lat",
        "lon",
        "lng",
        "latitude",
        "longitude",
        "coordinates",
        "coord",
        "gps",
        "geo",
        "address",
        "addr",
        "street",
        "city",
        "town",
        "county",
        "cnty",
        "zip",
        "zipcode",
        "postal",
        "postcode",
        "birthplace",
    ]) {
        Geography
    } else if has(&["dob", "dod", "birth", "brth", "death"]) {
        Dates
    } else if has(&[
        "name",
        "nm",
        "first",
        "last",
        "given",
        "family",
        "surname",
        "maiden",
        "alias",
        "aliases",
        "nickname",
        "guardian",
        "kin",
        "nok",
        "middle",
        "mdl",
        "initials",
        "username",
        "login",
        "physician",
        "pharmacist",
        "technician",
        "by",
    ]) {
        Names
    } else if has(&[
        "uid",
        "accession",
        "barcode",
        "npi",
        "password",
        "hash",
        "token",
        "secret",
        "session",
    ]) {
        OtherId
    } else if has(&[
        "code",
        "cd",
        "cui",
        "loinc",
        "snomed",
        "icd",
        "icd10",
        "ndc",
        "hcpcs",
        "cpt",
        "cvx",
        "rxnorm",
        "type",
        "kind",
        "category",
        "status",
        "flag",
        "unit",
        "units",
        "count",
        "cnt",
        "amt",
        "amount",
        "cost",
        "qty",
        "quantity",
        "description",
        "desc",
        "sex",
        "gender",
        "race",
        "ethnicity",
        "language",
        "priority",
        "modality",
        "model",
    ]) {
        return Some(NameHint::SafeKind);
    } else {
        return None;
    };
    Some(NameHint::Id(class))
}

/// Tables that describe organisations rather than people.
pub fn is_organisation_table(table: &str) -> bool {
    words(table).iter().any(|w| {
        matches!(
            w.as_str(),
            "organization"
                | "organizations"
                | "organisation"
                | "organisations"
                | "org"
                | "orgs"
                | "facility"
                | "facilities"
                | "payer"
                | "payers"
                | "insurer"
                | "insurers"
                | "vendor"
                | "vendors"
                | "manufacturer"
                | "manufacturers"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_snake_camel_and_digits() {
        assert_eq!(words("bene_1st_nm"), ["bene", "1st", "nm"]);
        assert_eq!(words("patientBirthDate"), ["patient", "birth", "date"]);
        assert_eq!(words("icd_dgns_cd1"), ["icd", "dgns", "cd", "1"]);
    }

    #[test]
    fn names_map_to_classes_by_whole_words() {
        assert_eq!(name_hint("drivers"), Some(NameHint::Id(IdClass::Licence)));
        assert_eq!(
            name_hint("bene_mbi"),
            Some(NameHint::Id(IdClass::HealthPlan))
        );
        assert_eq!(name_hint("acct_num"), Some(NameHint::Id(IdClass::Account)));
        assert_eq!(name_hint("maiden"), Some(NameHint::Id(IdClass::Names)));
        assert_eq!(name_hint("lat"), Some(NameHint::Id(IdClass::Geography)));
        assert_eq!(name_hint("ethnicity"), Some(NameHint::SafeKind));
        assert_eq!(name_hint("clm_pmt_amt_ip"), Some(NameHint::SafeKind));
        assert_eq!(name_hint("NCH_IP_TOT_DDCTN_AMT"), Some(NameHint::SafeKind));
        assert_eq!(name_hint("client_ip"), Some(NameHint::Id(IdClass::Ip)));
        assert_eq!(name_hint("org_nm"), Some(NameHint::SafeKind));
        assert_eq!(name_hint("station_name"), Some(NameHint::SafeKind));
        assert_eq!(name_hint("specialty"), None);
        assert!(is_organisation_table("organizations") && !is_organisation_table("patients"));
    }
}
