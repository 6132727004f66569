//! The proposer's evaluation corpus: seven schemas designed after real systems, every column
//! labelled with its Safe Harbor identifier class (45 CFR 164.514(b)(2)) or `Safe`.
//!
//! Labelled and committed before the proposer is tuned. Two schemas (`pharmacy`, `telemetry`)
//! are **held out**: do not read them while tuning the proposer, and report them separately.
//!
//! Labelling rules (the strict reading; when in doubt, the identifier class):
//! - every primary key, unique column and column referencing one is an identifier (`OtherId`
//!   unless a more specific class fits, e.g. a unique e-mail is `Email`);
//! - all elements of dates (except the year) related to a person — birth, death, visit,
//!   collection, service, login dates — are `Dates`; years alone are `Safe`;
//! - geography below the state (street, city, county, ZIP, coordinates) is `Geography`; a state
//!   is `Safe`;
//! - clinical codes (SNOMED CT, LOINC, ICD-10, NDC, RxNorm, CVX, HCPCS), DICOM SOP class UIDs,
//!   units, categories, flags and measurements are `Safe`;
//! - free text that carries names or numbers of people is labelled with the class it carries;
//! - people are patients, their relatives and the staff who appear in the data (providers,
//!   technicians, pharmacists): their names and numbers are identifiers; organisations' names,
//!   addresses and phones are `Safe`; a device's serial or UDI is `Device` even when the device
//!   belongs to the hospital (the stricter reading).

#![allow(dead_code)]

pub mod real;
pub mod values;

use values::*;

/// The 18 Safe Harbor identifier classes, and safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
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
    Safe,
}

impl Class {
    pub fn is_identifier(self) -> bool {
        self != Class::Safe
    }
    pub fn name(self) -> &'static str {
        match self {
            Class::Names => "names",
            Class::Geography => "geography",
            Class::Dates => "dates",
            Class::Phone => "phone",
            Class::Fax => "fax",
            Class::Email => "email",
            Class::Ssn => "ssn",
            Class::Mrn => "mrn",
            Class::HealthPlan => "health_plan",
            Class::Account => "account",
            Class::Licence => "licence",
            Class::Vehicle => "vehicle",
            Class::Device => "device",
            Class::Url => "url",
            Class::Ip => "ip",
            Class::Biometric => "biometric",
            Class::Photo => "photo",
            Class::OtherId => "other_id",
            Class::Safe => "safe",
        }
    }
}

/// Makes the text form of one value of row `i` (`None` is NULL).
pub type Gen = Box<dyn Fn(&mut Rng, u64) -> Option<String>>;

pub struct Col {
    pub name: &'static str,
    pub sql_type: &'static str,
    pub class: Class,
    pub make: Gen,
    /// JSON columns: the keys that are structure, not data (`key`), and those whose values are
    /// safe too (`key=`). Everything else in the document is of the column's class.
    pub json_safe: &'static [&'static str],
}

pub struct Table {
    pub name: &'static str,
    pub rows: u64,
    pub columns: Vec<Col>,
    /// Constraints after the columns (primary key, unique, foreign keys); empty: key-less.
    pub constraints: &'static str,
}

impl Table {
    /// One `INSERT … ON CONFLICT DO NOTHING` of rows `ids` (row `i` of a key column is the
    /// table's `i`-th key, so ids past `rows` make new rows that reference existing ones).
    pub fn insert_sql(&self, ids: &[u64], r: &mut Rng) -> String {
        let names: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .collect();
        let rows: Vec<String> = ids
            .iter()
            .map(|&i| {
                let vals: Vec<String> = self.columns.iter().map(|c| lit(&(c.make)(r, i))).collect();
                format!("({})", vals.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO \"{}\" ({}) VALUES {} ON CONFLICT DO NOTHING",
            self.name,
            names.join(", "),
            rows.join(",\n")
        )
    }

    /// A literal for column `col` of row `i`.
    pub fn value_sql(&self, col: &Col, i: u64, r: &mut Rng) -> String {
        lit(&(col.make)(r, i))
    }
}

pub struct Schema {
    pub name: &'static str,
    pub shaped_after: &'static str,
    pub held_out: bool,
    /// Run before the tables (types).
    pub preamble: &'static str,
    pub tables: Vec<Table>,
}

fn col(name: &'static str, sql_type: &'static str, class: Class, make: Gen) -> Col {
    Col {
        name,
        sql_type,
        class,
        make,
        json_safe: &[],
    }
}

impl Col {
    fn json_safe(mut self, keys: &'static [&'static str]) -> Col {
        self.json_safe = keys;
        self
    }
}

/// Always a value.
fn g(f: impl Fn(&mut Rng) -> String + 'static) -> Gen {
    Box::new(move |r, _| Some(f(r)))
}
/// A value, NULL with probability `p`.
fn opt(p: f64, f: impl Fn(&mut Rng) -> String + 'static) -> Gen {
    Box::new(move |r, _| if r.chance(p) { None } else { Some(f(r)) })
}
/// The key of row `i` of namespace `ns`: a uuid.
fn key_uuid(ns: &'static str) -> Gen {
    Box::new(move |_, i| Some(uuid_for(ns, i)))
}
/// A reference to one of the first `n` rows of namespace `ns` (uuid keys).
fn ref_uuid(ns: &'static str, n: u64) -> Gen {
    Box::new(move |r, _| Some(uuid_for(ns, r.below(n))))
}
/// Bigint keys: `base + i * step` (surrogate keys as warehouses make them).
fn key_int(base: i64, step: i64) -> Gen {
    Box::new(move |_, i| Some((base + i as i64 * step).to_string()))
}
fn ref_int(base: i64, step: i64, n: u64) -> Gen {
    Box::new(move |r, _| Some((base + r.below(n) as i64 * step).to_string()))
}
/// The i-th row's value of a text key built by `f` from a seed fixed per row.
fn key_text(ns: &'static str, f: fn(&mut Rng) -> String) -> Gen {
    Box::new(move |_, i| Some(f(&mut Rng::new(h64(ns, i)))))
}
fn ref_text(ns: &'static str, n: u64, f: fn(&mut Rng) -> String) -> Gen {
    Box::new(move |r, _| Some(f(&mut Rng::new(h64(ns, r.below(n))))))
}
fn one_of(xs: &'static [&'static str]) -> Gen {
    Box::new(move |r, _| Some(r.pick(xs).to_owned()))
}
fn num(lo: i64, hi: i64) -> Gen {
    Box::new(move |r, _| Some(r.range(lo, hi).to_string()))
}
fn decimal(lo: i64, hi: i64, places: u32) -> Gen {
    Box::new(move |r, _| {
        let scale = 10i64.pow(places);
        let v = r.range(lo * scale, hi * scale);
        Some(format!(
            "{}.{:0width$}",
            v / scale,
            (v % scale).abs(),
            width = places as usize
        ))
    })
}
fn boolean() -> Gen {
    Box::new(|r, _| Some(if r.chance(0.5) { "true" } else { "false" }.into()))
}

pub const N_PATIENTS: u64 = 400;

/// An EHR export shaped like Synthea's CSVs: uuid keys, Synthea-style names with digits,
/// licences and passports, maiden names, coordinates of home addresses, SNOMED/LOINC codes.
fn ehr() -> Schema {
    use Class::*;
    Schema {
        name: "ehr",
        shaped_after: "an EHR export (Synthea CSV layout): patients, organizations, providers, encounters, conditions, observations, immunizations",
        held_out: false,
        preamble: "",
        tables: vec![
            Table {
                name: "patients",
                rows: N_PATIENTS,
                constraints: "PRIMARY KEY (id)",
                columns: vec![
                    col("id", "uuid", OtherId, key_uuid("ehr.patient")),
                    col("birthdate", "date", Dates, g(|r| date(r, 1925, 2022))),
                    col(
                        "deathdate",
                        "date",
                        Dates,
                        opt(0.9, |r| date(r, 2000, 2024)),
                    ),
                    col(
                        "ssn",
                        "text",
                        Ssn,
                        g(|r| {
                            let s = ssn(r);
                            if s.len() == 9 {
                                format!("{}-{}-{}", &s[..3], &s[3..5], &s[5..])
                            } else {
                                s
                            }
                        }),
                    ),
                    col("drivers", "text", Licence, opt(0.2, licence)),
                    col("passport", "text", Licence, opt(0.3, passport)),
                    col(
                        "prefix",
                        "text",
                        Safe,
                        opt(0.2, |r| r.pick(&["Mr.", "Mrs.", "Ms.", "Dr."]).to_owned()),
                    ),
                    col("first", "text", Names, g(given)),
                    col("last", "text", Names, g(family)),
                    col(
                        "suffix",
                        "text",
                        Safe,
                        opt(0.95, |r| r.pick(&["Jr.", "Sr.", "III"]).to_owned()),
                    ),
                    col("maiden", "text", Names, opt(0.6, family)),
                    col(
                        "marital",
                        "text",
                        Safe,
                        opt(0.2, |r| r.pick(&["M", "S", "D", "W"]).to_owned()),
                    ),
                    col(
                        "race",
                        "text",
                        Safe,
                        one_of(&["white", "black", "asian", "native", "other"]),
                    ),
                    col(
                        "ethnicity",
                        "text",
                        Safe,
                        one_of(&["hispanic", "nonhispanic"]),
                    ),
                    col("gender", "text", Safe, one_of(&["M", "F"])),
                    col(
                        "birthplace",
                        "text",
                        Geography,
                        g(|r| format!("{}  Massachusetts  US", r.pick(CITIES))),
                    ),
                    col("address", "text", Geography, g(street)),
                    col("city", "text", Geography, g(|r| r.pick(CITIES).to_owned())),
                    col("state", "text", Safe, g(|_| "Massachusetts".into())),
                    col(
                        "county",
                        "text",
                        Geography,
                        g(|r| r.pick(COUNTIES).to_owned()),
                    ),
                    col("zip", "text", Geography, opt(0.1, zip5)),
                    col("lat", "double precision", Geography, g(lat)),
                    col("lon", "double precision", Geography, g(lon)),
                    col(
                        "healthcare_expenses",
                        "numeric(12,2)",
                        Safe,
                        decimal(0, 2_000_000, 2),
                    ),
                    col("income", "integer", Safe, num(9_000, 250_000)),
                    col(
                        "aliases",
                        "text[]",
                        Names,
                        opt(0.7, |r| {
                            format!(
                                "{{\"{}\",\"{}\"}}",
                                full_name(r).replace('"', ""),
                                given(r).replace('"', "")
                            )
                        }),
                    ),
                    col("photo", "bytea", Photo, opt(0.8, |r| bytes_hex(r, 64))),
                ],
            },
            Table {
                name: "organizations",
                rows: 40,
                constraints: "PRIMARY KEY (id)",
                columns: vec![
                    col("id", "uuid", OtherId, key_uuid("ehr.org")),
                    col(
                        "name",
                        "text",
                        Safe,
                        g(|r| {
                            format!(
                                "{} {}",
                                r.pick(CITIES),
                                r.pick(&[
                                    "General Hospital",
                                    "Family Practice",
                                    "Medical Center",
                                    "Urgent Care"
                                ])
                            )
                        }),
                    ),
                    col("address", "text", Safe, g(street)),
                    col("city", "text", Safe, g(|r| r.pick(CITIES).to_owned())),
                    col("state", "text", Safe, g(|r| r.pick(STATES).to_owned())),
                    col("phone", "text", Safe, g(phone)),
                    col("revenue", "numeric(14,2)", Safe, decimal(0, 90_000_000, 2)),
                ],
            },
            Table {
                name: "providers",
                rows: 120,
                constraints: "PRIMARY KEY (id), FOREIGN KEY (organization) REFERENCES organizations (id)",
                columns: vec![
                    col("id", "uuid", OtherId, key_uuid("ehr.provider")),
                    col("organization", "uuid", OtherId, ref_uuid("ehr.org", 40)),
                    col("name", "text", Names, g(full_name)),
                    col("gender", "text", Safe, one_of(&["M", "F"])),
                    col(
                        "speciality",
                        "text",
                        Safe,
                        one_of(&[
                            "GENERAL PRACTICE",
                            "CARDIOLOGY",
                            "PEDIATRICS",
                            "ONCOLOGY",
                            "PSYCHIATRY",
                        ]),
                    ),
                    col("npi", "text", OtherId, key_text("ehr.npi", npi)),
                    col("utilization", "integer", Safe, num(0, 5000)),
                ],
            },
            Table {
                name: "encounters",
                rows: 1500,
                constraints: "PRIMARY KEY (id), FOREIGN KEY (patient) REFERENCES patients (id), FOREIGN KEY (provider) REFERENCES providers (id), FOREIGN KEY (organization) REFERENCES organizations (id)",
                columns: vec![
                    col("id", "uuid", OtherId, key_uuid("ehr.encounter")),
                    col(
                        "start",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2010, 2024)),
                    ),
                    col(
                        "stop",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2010, 2024)),
                    ),
                    col(
                        "patient",
                        "uuid",
                        OtherId,
                        ref_uuid("ehr.patient", N_PATIENTS),
                    ),
                    col("organization", "uuid", OtherId, ref_uuid("ehr.org", 40)),
                    col("provider", "uuid", OtherId, ref_uuid("ehr.provider", 120)),
                    col(
                        "encounterclass",
                        "text",
                        Safe,
                        one_of(&[
                            "wellness",
                            "ambulatory",
                            "outpatient",
                            "inpatient",
                            "emergency",
                            "urgentcare",
                        ]),
                    ),
                    col("code", "bigint", Safe, g(snomed)),
                    col(
                        "description",
                        "text",
                        Safe,
                        one_of(&[
                            "General examination of patient",
                            "Encounter for problem",
                            "Emergency room admission",
                            "Well child visit",
                        ]),
                    ),
                    col(
                        "base_encounter_cost",
                        "numeric(10,2)",
                        Safe,
                        decimal(50, 3000, 2),
                    ),
                    col("reasoncode", "bigint", Safe, opt(0.5, snomed)),
                ],
            },
            Table {
                name: "conditions",
                rows: 900,
                constraints: "FOREIGN KEY (patient) REFERENCES patients (id), FOREIGN KEY (encounter) REFERENCES encounters (id)",
                columns: vec![
                    col("start", "date", Dates, g(|r| date(r, 2010, 2024))),
                    col("stop", "date", Dates, opt(0.6, |r| date(r, 2010, 2024))),
                    col(
                        "patient",
                        "uuid",
                        OtherId,
                        ref_uuid("ehr.patient", N_PATIENTS),
                    ),
                    col(
                        "encounter",
                        "uuid",
                        OtherId,
                        ref_uuid("ehr.encounter", 1500),
                    ),
                    col("code", "bigint", Safe, g(snomed)),
                    col(
                        "description",
                        "text",
                        Safe,
                        one_of(&[
                            "Hypertension",
                            "Prediabetes",
                            "Acute bronchitis",
                            "Viral sinusitis",
                            "Anemia",
                        ]),
                    ),
                ],
            },
            Table {
                name: "observations",
                rows: 2500,
                constraints: "",
                columns: vec![
                    col(
                        "date",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2010, 2024)),
                    ),
                    col(
                        "patient",
                        "uuid",
                        OtherId,
                        ref_uuid("ehr.patient", N_PATIENTS),
                    ),
                    col(
                        "encounter",
                        "uuid",
                        OtherId,
                        ref_uuid("ehr.encounter", 1500),
                    ),
                    col(
                        "category",
                        "text",
                        Safe,
                        one_of(&["vital-signs", "laboratory", "survey", "exam"]),
                    ),
                    col("code", "text", Safe, g(loinc)),
                    col(
                        "description",
                        "text",
                        Safe,
                        one_of(&[
                            "Body Height",
                            "Body Weight",
                            "Heart rate",
                            "Glucose",
                            "Hemoglobin A1c",
                        ]),
                    ),
                    col("value", "text", Safe, decimal(1, 250, 1)),
                    col(
                        "units",
                        "text",
                        Safe,
                        one_of(&["cm", "kg", "/min", "mg/dL", "%"]),
                    ),
                    col("type", "text", Safe, one_of(&["numeric", "text"])),
                ],
            },
            Table {
                name: "immunizations",
                rows: 600,
                constraints: "FOREIGN KEY (patient) REFERENCES patients (id)",
                columns: vec![
                    col("date", "date", Dates, g(|r| date(r, 2010, 2024))),
                    col(
                        "patient",
                        "uuid",
                        OtherId,
                        ref_uuid("ehr.patient", N_PATIENTS),
                    ),
                    col("code", "integer", Safe, num(3, 150)),
                    col(
                        "description",
                        "text",
                        Safe,
                        one_of(&[
                            "Influenza seasonal injectable",
                            "Td (adult)",
                            "Hep B adolescent",
                            "COVID-19 mRNA",
                        ]),
                    ),
                    col("base_cost", "numeric(8,2)", Safe, decimal(10, 200, 2)),
                ],
            },
        ],
    }
}

/// A claims warehouse: bigint surrogate keys, terse abbreviated column names, Medicare
/// beneficiary identifiers, member/group/account numbers, ICD-10 and HCPCS codes.
fn claims() -> Schema {
    use Class::*;
    Schema {
        name: "claims",
        shaped_after: "a payer claims warehouse (CMS-style abbreviations): beneficiaries, enrollment, providers, claims, claim lines, payments",
        held_out: false,
        preamble: "",
        tables: vec![
            Table {
                name: "bene",
                rows: N_PATIENTS,
                constraints: "PRIMARY KEY (bene_id), UNIQUE (bene_mbi)",
                columns: vec![
                    col("bene_id", "bigint", OtherId, key_int(-8_000_000_000, 3)),
                    col("bene_mbi", "text", HealthPlan, key_text("claims.mbi", mbi)),
                    col(
                        "bene_ssn_num",
                        "bigint",
                        Ssn,
                        g(
                            |r| {
                                format!("{}{:02}{}", r.range(100, 665), r.range(1, 99), r.digits(4))
                            },
                        ),
                    ),
                    col("bene_brth_dt", "date", Dates, g(|r| date(r, 1925, 1960))),
                    col(
                        "bene_death_dt",
                        "date",
                        Dates,
                        opt(0.9, |r| date(r, 2015, 2024)),
                    ),
                    col("bene_sex_ident_cd", "char(1)", Safe, one_of(&["1", "2"])),
                    col(
                        "bene_race_cd",
                        "char(1)",
                        Safe,
                        one_of(&["1", "2", "3", "4", "5", "6"]),
                    ),
                    col("bene_1st_nm", "varchar(30)", Names, g(given)),
                    col("bene_last_nm", "varchar(40)", Names, g(family)),
                    col(
                        "bene_mdl_nm",
                        "varchar(1)",
                        Names,
                        opt(0.5, |r| r.letters(1)),
                    ),
                    col("st_cd", "char(2)", Safe, g(|r| r.pick(STATES).to_owned())),
                    col(
                        "cnty_cd",
                        "char(3)",
                        Geography,
                        g(|r| format!("{:03}", r.range(1, 27))),
                    ),
                    col(
                        "bene_zip_cd",
                        "integer",
                        Geography,
                        g(|r| r.range(1001, 2791).to_string()),
                    ),
                    col("bene_esrd_ind", "char(1)", Safe, one_of(&["Y", "0"])),
                    col(
                        "bene_phne_num",
                        "bigint",
                        Phone,
                        g(
                            |r| {
                                format!("{}{}{}", r.range(201, 989), r.range(200, 999), r.digits(4))
                            },
                        ),
                    ),
                ],
            },
            Table {
                name: "prvdr",
                rows: 150,
                constraints: "PRIMARY KEY (prvdr_num), UNIQUE (prvdr_npi)",
                columns: vec![
                    col(
                        "prvdr_num",
                        "text",
                        OtherId,
                        key_text("claims.prvdr", |r| {
                            format!("{:02}{}", r.range(1, 99), r.digits(4))
                        }),
                    ),
                    col("prvdr_npi", "bigint", OtherId, key_text("claims.npi", npi)),
                    col(
                        "org_nm",
                        "text",
                        Safe,
                        g(|r| {
                            format!(
                                "{} {}",
                                r.pick(CITIES),
                                r.pick(&["Hospital", "Clinic", "Dialysis Ctr"])
                            )
                        }),
                    ),
                    col(
                        "prvdr_st_cd",
                        "char(2)",
                        Safe,
                        g(|r| r.pick(STATES).to_owned()),
                    ),
                    col("prvdr_type_cd", "smallint", Safe, num(1, 40)),
                ],
            },
            Table {
                name: "enrlmt",
                rows: 500,
                constraints: "FOREIGN KEY (bene_id) REFERENCES bene (bene_id)",
                columns: vec![
                    col(
                        "bene_id",
                        "bigint",
                        OtherId,
                        ref_int(-8_000_000_000, 3, N_PATIENTS),
                    ),
                    col(
                        "pln_id",
                        "text",
                        Safe,
                        one_of(&["H1234-001", "H5678-002", "S4802-114", "R3444-001"]),
                    ),
                    col("mbr_num", "text", HealthPlan, g(member_id)),
                    col(
                        "grp_num",
                        "text",
                        Safe,
                        one_of(&["GRP001", "GRP017", "GRP230", "GRP999"]),
                    ),
                    col("acct_num", "text", Account, g(account_no)),
                    col("eff_dt", "date", Dates, g(|r| date(r, 2015, 2024))),
                    col("trm_dt", "date", Dates, opt(0.5, |r| date(r, 2015, 2025))),
                    col("rfrnc_yr", "smallint", Safe, num(2015, 2024)),
                ],
            },
            Table {
                name: "clm",
                rows: 1500,
                constraints: "PRIMARY KEY (clm_id), FOREIGN KEY (bene_id) REFERENCES bene (bene_id), FOREIGN KEY (prvdr_num) REFERENCES prvdr (prvdr_num)",
                columns: vec![
                    col("clm_id", "bigint", OtherId, key_int(1_000_000_000_000, 17)),
                    col(
                        "bene_id",
                        "bigint",
                        OtherId,
                        ref_int(-8_000_000_000, 3, N_PATIENTS),
                    ),
                    col(
                        "prvdr_num",
                        "text",
                        OtherId,
                        ref_text("claims.prvdr", 150, |r| {
                            format!("{:02}{}", r.range(1, 99), r.digits(4))
                        }),
                    ),
                    col("at_physn_npi", "bigint", OtherId, g(npi)),
                    col("clm_from_dt", "date", Dates, g(|r| date(r, 2018, 2024))),
                    col("clm_thru_dt", "date", Dates, g(|r| date(r, 2018, 2024))),
                    col("clm_pmt_amt", "numeric(12,2)", Safe, decimal(0, 50_000, 2)),
                    col("icd_dgns_cd1", "varchar(7)", Safe, g(icd10)),
                    col("icd_dgns_cd2", "varchar(7)", Safe, opt(0.4, icd10)),
                    col("clm_type_cd", "smallint", Safe, num(10, 72)),
                    col(
                        "clm_chk_num",
                        "text",
                        Account,
                        opt(0.3, |r| format!("CHK{}", r.digits(10))),
                    ),
                ],
            },
            Table {
                name: "clm_line",
                rows: 3000,
                constraints: "PRIMARY KEY (clm_id, line_num), FOREIGN KEY (clm_id) REFERENCES clm (clm_id)",
                columns: vec![
                    col(
                        "clm_id",
                        "bigint",
                        OtherId,
                        ref_int(1_000_000_000_000, 17, 1500),
                    ),
                    col(
                        "line_num",
                        "smallint",
                        OtherId,
                        Box::new(|_, i| Some((i % 30000 + 1).to_string())),
                    ),
                    col("hcpcs_cd", "varchar(5)", Safe, g(hcpcs)),
                    col("line_srvc_cnt", "numeric(6,1)", Safe, decimal(1, 30, 1)),
                    col(
                        "line_alowd_chrg_amt",
                        "numeric(12,2)",
                        Safe,
                        decimal(0, 9000, 2),
                    ),
                    col(
                        "line_place_of_srvc_cd",
                        "char(2)",
                        Safe,
                        one_of(&["11", "21", "22", "23", "81"]),
                    ),
                    col(
                        "line_ndc_cd",
                        "varchar(11)",
                        Safe,
                        opt(0.7, |r| ndc(r).replace('-', "")),
                    ),
                ],
            },
            // Added after the first labelling (a numeric key shape): payments keyed by a
            // numeric(15,0) check number, as older warehouses keep them.
            Table {
                name: "pmt",
                rows: 600,
                constraints: "PRIMARY KEY (pmt_chk_num), FOREIGN KEY (clm_id) REFERENCES clm (clm_id)",
                columns: vec![
                    col(
                        "pmt_chk_num",
                        "numeric(15,0)",
                        OtherId,
                        key_int(100_000_000_000_000, 7),
                    ),
                    col(
                        "clm_id",
                        "bigint",
                        OtherId,
                        ref_int(1_000_000_000_000, 17, 1500),
                    ),
                    col("pmt_amt", "numeric(12,2)", Safe, decimal(0, 9000, 2)),
                ],
            },
        ],
    }
}

/// A laboratory information system: accessions, specimens with barcodes, results with LOINC,
/// instruments with serial numbers, free-text comments.
fn lab() -> Schema {
    use Class::*;
    Schema {
        name: "lab",
        shaped_after: "a laboratory information system: orders, accessions/specimens, results, instruments",
        held_out: false,
        preamble: "CREATE TYPE priority AS ENUM ('routine', 'stat', 'asap');",
        tables: vec![
            Table {
                name: "instrument",
                rows: 12,
                constraints: "PRIMARY KEY (instrument_id)",
                columns: vec![
                    col("instrument_id", "integer", OtherId, key_int(1, 1)),
                    col(
                        "model",
                        "text",
                        Safe,
                        one_of(&["cobas 8000", "Alinity ci", "Atellica", "DxH 900"]),
                    ),
                    col("serial_no", "text", Device, key_text("lab.serial", serial)),
                    col("installed_on", "date", Safe, g(|r| date(r, 2012, 2022))),
                ],
            },
            Table {
                name: "specimen",
                rows: 1200,
                constraints: "PRIMARY KEY (accession), UNIQUE (container_barcode)",
                columns: vec![
                    col(
                        "accession",
                        "text",
                        OtherId,
                        key_text("lab.acc", |r| {
                            format!("{}-CH-{:06}", r.range(19, 24), r.below(999_999))
                        }),
                    ),
                    col("patient_mrn", "text", Mrn, g(mrn)),
                    col(
                        "patient_name",
                        "text",
                        Names,
                        g(
                            |r| {
                                format!("{}, {}", family(r).to_uppercase(), given(r).to_uppercase())
                            },
                        ),
                    ),
                    col(
                        "collected_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2019, 2024)),
                    ),
                    col(
                        "received_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2019, 2024)),
                    ),
                    col(
                        "specimen_type",
                        "text",
                        Safe,
                        one_of(&["SER", "PLAS", "WB", "UR", "CSF"]),
                    ),
                    col(
                        "container_barcode",
                        "text",
                        OtherId,
                        key_text("lab.barcode", |r| format!("B{}", r.digits(11))),
                    ),
                    col(
                        "collector_initials",
                        "varchar(3)",
                        Names,
                        g(|r| r.letters(2)),
                    ),
                    col(
                        "priority",
                        "priority",
                        Safe,
                        one_of(&["routine", "stat", "asap"]),
                    ),
                    col("fasting", "boolean", Safe, boolean()),
                ],
            },
            Table {
                name: "lab_order",
                rows: 1200,
                constraints: "PRIMARY KEY (order_id), FOREIGN KEY (accession) REFERENCES specimen (accession)",
                columns: vec![
                    col("order_id", "uuid", OtherId, key_uuid("lab.order")),
                    col(
                        "accession",
                        "text",
                        OtherId,
                        Box::new(|_, i| Some(Rng::new(h64("lab.acc", i)).pipe_acc())),
                    ),
                    col("ordering_npi", "text", OtherId, g(npi)),
                    col("icd10", "text", Safe, g(icd10)),
                    col(
                        "panel",
                        "text",
                        Safe,
                        one_of(&["BMP", "CMP", "CBC", "LIPID", "TSH", "HBA1C"]),
                    ),
                    col("comment", "text", Names, opt(0.6, note)),
                ],
            },
            Table {
                name: "result",
                rows: 4000,
                constraints: "PRIMARY KEY (result_id), FOREIGN KEY (accession) REFERENCES specimen (accession), FOREIGN KEY (instrument_id) REFERENCES instrument (instrument_id)",
                columns: vec![
                    col("result_id", "bigint", OtherId, key_int(50_000_000, 1)),
                    col(
                        "accession",
                        "text",
                        OtherId,
                        Box::new(|r, _| Some(Rng::new(h64("lab.acc", r.below(1200))).pipe_acc())),
                    ),
                    col("loinc", "text", Safe, g(loinc)),
                    col("value_num", "numeric", Safe, decimal(0, 500, 2)),
                    col(
                        "unit",
                        "text",
                        Safe,
                        one_of(&["mg/dL", "mmol/L", "g/dL", "10*3/uL", "%"]),
                    ),
                    col(
                        "ref_range",
                        "text",
                        Safe,
                        one_of(&["70-99", "3.5-5.1", "12.0-15.5", "4.0-11.0"]),
                    ),
                    col(
                        "abnormal_flag",
                        "char(1)",
                        Safe,
                        opt(0.7, |r| r.pick(&["H", "L", "A"]).to_owned()),
                    ),
                    col("instrument_id", "integer", OtherId, num(1, 12)),
                    col(
                        "verified_by",
                        "text",
                        Names,
                        g(|r| format!("{} {}", given(r), family(r))),
                    ),
                    col(
                        "verified_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2019, 2024)),
                    ),
                ],
            },
        ],
    }
}

trait PipeAcc {
    fn pipe_acc(self) -> String;
}
impl PipeAcc for Rng {
    /// The accession made from this seed (the same closure as `specimen.accession`).
    fn pipe_acc(mut self) -> String {
        let r = &mut self;
        format!("{}-CH-{:06}", r.range(19, 24), r.below(999_999))
    }
}

/// An imaging archive (PACS): DICOM UIDs (study/series/instance identify a patient's images;
/// SOP class UIDs are standard constants), DICOM names and dates, device UDIs.
fn imaging() -> Schema {
    use Class::*;
    Schema {
        name: "imaging",
        shaped_after: "a PACS / vendor-neutral archive index: studies, series, instances, modalities",
        held_out: false,
        preamble: "",
        tables: vec![
            Table {
                name: "modality",
                rows: 10,
                constraints: "PRIMARY KEY (ae_title)",
                columns: vec![
                    col(
                        "ae_title",
                        "text",
                        OtherId,
                        key_text("img.ae", |r| format!("CT{}", r.digits(2))),
                    ),
                    col(
                        "manufacturer",
                        "text",
                        Safe,
                        one_of(&["GE MEDICAL SYSTEMS", "SIEMENS", "Philips", "Canon"]),
                    ),
                    col(
                        "device_serial",
                        "text",
                        Device,
                        key_text("img.serial", serial),
                    ),
                    col("udi", "text", Device, key_text("img.udi", udi_gs1)),
                    col(
                        "station_name",
                        "text",
                        Safe,
                        one_of(&["CTAWP01", "MRI-3T-A", "US-ER-2"]),
                    ),
                ],
            },
            Table {
                name: "study",
                rows: 800,
                constraints: "PRIMARY KEY (study_uid), UNIQUE (accession_no)",
                columns: vec![
                    col(
                        "study_uid",
                        "text",
                        OtherId,
                        key_text("img.study", dicom_uid),
                    ),
                    col(
                        "accession_no",
                        "text",
                        OtherId,
                        key_text("img.acc", |r| format!("A{}", r.digits(9))),
                    ),
                    col("patient_id", "text", Mrn, g(mrn)),
                    col("patient_name", "text", Names, g(dicom_name)),
                    col(
                        "patient_birth_date",
                        "char(8)",
                        Dates,
                        g(|r| date(r, 1930, 2020).replace('-', "")),
                    ),
                    col("patient_sex", "char(1)", Safe, one_of(&["M", "F", "O"])),
                    col("study_date", "date", Dates, g(|r| date(r, 2015, 2024))),
                    col(
                        "study_description",
                        "text",
                        Safe,
                        one_of(&[
                            "CT CHEST W/O CONTRAST",
                            "MRI BRAIN W+WO",
                            "XR CHEST 2V",
                            "US ABDOMEN",
                        ]),
                    ),
                    col("referring_physician", "text", Names, g(dicom_name)),
                    col(
                        "institution",
                        "text",
                        Safe,
                        one_of(&["GENERAL HOSPITAL", "NORTH CAMPUS", "IMAGING CENTER EAST"]),
                    ),
                ],
            },
            Table {
                name: "series",
                rows: 2400,
                constraints: "PRIMARY KEY (series_uid), FOREIGN KEY (study_uid) REFERENCES study (study_uid), FOREIGN KEY (ae_title) REFERENCES modality (ae_title)",
                columns: vec![
                    col(
                        "series_uid",
                        "text",
                        OtherId,
                        key_text("img.series", dicom_uid),
                    ),
                    col(
                        "study_uid",
                        "text",
                        OtherId,
                        ref_text("img.study", 800, dicom_uid),
                    ),
                    col(
                        "ae_title",
                        "text",
                        OtherId,
                        ref_text("img.ae", 10, |r| format!("CT{}", r.digits(2))),
                    ),
                    col("series_number", "integer", Safe, num(1, 20)),
                    col(
                        "body_part",
                        "text",
                        Safe,
                        one_of(&["CHEST", "HEAD", "ABDOMEN", "PELVIS", "KNEE"]),
                    ),
                    col("slice_thickness", "real", Safe, decimal(0, 5, 1)),
                ],
            },
            Table {
                name: "instance",
                rows: 5000,
                constraints: "PRIMARY KEY (sop_instance_uid), FOREIGN KEY (series_uid) REFERENCES series (series_uid)",
                columns: vec![
                    col(
                        "sop_instance_uid",
                        "text",
                        OtherId,
                        key_text("img.inst", dicom_uid),
                    ),
                    col(
                        "series_uid",
                        "text",
                        OtherId,
                        ref_text("img.series", 2400, dicom_uid),
                    ),
                    col("sop_class_uid", "text", Safe, one_of(SOP_CLASSES)),
                    col("instance_number", "integer", Safe, num(1, 400)),
                    col("rows", "integer", Safe, one_of(&["512", "1024", "2048"])),
                    col("columns", "integer", Safe, one_of(&["512", "1024", "2048"])),
                    col(
                        "transfer_syntax",
                        "text",
                        Safe,
                        one_of(&[
                            "1.2.840.10008.1.2",
                            "1.2.840.10008.1.2.1",
                            "1.2.840.10008.1.2.4.90",
                        ]),
                    ),
                    col("file_size", "bigint", Safe, num(100_000, 90_000_000)),
                ],
            },
        ],
    }
}

/// A patient portal: logins, e-mail, IP addresses, user agents, URLs, messages with free text,
/// preferences as jsonb with identifiers in values and as keys.
fn portal() -> Schema {
    use Class::*;
    Schema {
        name: "portal",
        shaped_after: "a patient portal: accounts, sessions, secure messages, preferences (jsonb), audit of downloads",
        held_out: false,
        preamble: "",
        tables: vec![
            Table {
                name: "account",
                rows: N_PATIENTS,
                constraints: "PRIMARY KEY (account_id), UNIQUE (username), UNIQUE (email)",
                columns: vec![
                    col("account_id", "bigint", OtherId, key_int(7_700_000, 1)),
                    col("username", "text", Names, key_text("portal.user", username)),
                    col("email", "text", Email, key_text("portal.email", email)),
                    col(
                        "password_hash",
                        "text",
                        OtherId,
                        g(|r| {
                            format!("$2b$12${}", (0..53).map(|_| char::from(b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[r.below(64) as usize])).collect::<String>())
                        }),
                    ),
                    col("mfa_phone", "text", Phone, opt(0.4, phone)),
                    col("patient_mrn", "text", Mrn, g(mrn)),
                    col(
                        "created_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2016, 2024)),
                    ),
                    col("last_login_ip", "inet", Ip, g(ipv4)),
                    col("locked", "boolean", Safe, boolean()),
                    col("failed_logins", "smallint", Safe, num(0, 5)),
                ],
            },
            Table {
                name: "session",
                rows: 2000,
                constraints: "PRIMARY KEY (session_id), FOREIGN KEY (account_id) REFERENCES account (account_id)",
                columns: vec![
                    col("session_id", "uuid", OtherId, key_uuid("portal.session")),
                    col(
                        "account_id",
                        "bigint",
                        OtherId,
                        ref_int(7_700_000, 1, N_PATIENTS),
                    ),
                    col(
                        "client_ip",
                        "inet",
                        Ip,
                        g(|r| if r.chance(0.3) { ipv6(r) } else { ipv4(r) }),
                    ),
                    col(
                        "user_agent",
                        "text",
                        Safe,
                        one_of(&[
                            "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
                            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
                            "okhttp/4.9.0",
                        ]),
                    ),
                    col(
                        "started_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2020, 2024)),
                    ),
                    col("duration_s", "integer", Safe, num(5, 7200)),
                ],
            },
            Table {
                name: "message",
                rows: 1200,
                constraints: "PRIMARY KEY (message_id), FOREIGN KEY (account_id) REFERENCES account (account_id)",
                columns: vec![
                    col("message_id", "bigint", OtherId, key_int(1, 1)),
                    col(
                        "account_id",
                        "bigint",
                        OtherId,
                        ref_int(7_700_000, 1, N_PATIENTS),
                    ),
                    col(
                        "sent_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2020, 2024)),
                    ),
                    col(
                        "subject",
                        "text",
                        Safe,
                        one_of(&[
                            "Refill request",
                            "Question about results",
                            "Appointment",
                            "Billing",
                        ]),
                    ),
                    col("body", "text", Names, g(note)),
                    col(
                        "attachment_url",
                        "text",
                        Url,
                        opt(0.6, |r| {
                            format!(
                                "https://portal.example-health.org/files/{}/{}.pdf",
                                r.range(7_700_000, 7_700_400),
                                r.digits(6)
                            )
                        }),
                    ),
                    col("read", "boolean", Safe, boolean()),
                ],
            },
            Table {
                name: "preference",
                rows: N_PATIENTS,
                constraints: "PRIMARY KEY (account_id), FOREIGN KEY (account_id) REFERENCES account (account_id)",
                columns: vec![
                    col("account_id", "bigint", OtherId, key_int(7_700_000, 1)),
                    col(
                        "language",
                        "text",
                        Safe,
                        one_of(&["en", "es", "pt", "zh", "vi"]),
                    ),
                    col("notify_email", "boolean", Safe, boolean()),
                    col(
                        "profile",
                        "jsonb",
                        Names,
                        g(|r| {
                            let n = full_name(r).replace('"', "");
                            format!(
                                "{{\"theme\": \"{}\", \"emergency_contacts\": {{\"{}\": {{\"phone\": \"{}\", \"relation\": \"{}\"}}}}, \"pharmacy\": \"{} Pharmacy\"}}",
                                r.pick(&["light", "dark"]),
                                n,
                                phone(r),
                                r.pick(&["spouse", "daughter", "son", "friend"]),
                                r.pick(CITIES)
                            )
                        }),
                    )
                    .json_safe(&["theme=", "emergency_contacts", "phone", "relation=", "pharmacy"]),
                    col(
                        "ui_flags",
                        "text[]",
                        Safe,
                        one_of(&["{compact}", "{compact,large_text}", "{}"]),
                    ),
                ],
            },
            Table {
                name: "download_log",
                rows: 800,
                constraints: "",
                columns: vec![
                    col(
                        "account_id",
                        "bigint",
                        OtherId,
                        ref_int(7_700_000, 1, N_PATIENTS),
                    ),
                    col(
                        "downloaded_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2021, 2024)),
                    ),
                    col(
                        "document_type",
                        "text",
                        Safe,
                        one_of(&["CCD", "lab-report", "visit-summary"]),
                    ),
                    col(
                        "url",
                        "text",
                        Url,
                        g(|r| {
                            format!(
                                "https://portal.example-health.org/docs?patient={}&doc={}",
                                r.range(7_700_000, 7_700_400),
                                r.digits(8)
                            )
                        }),
                    ),
                ],
            },
        ],
    }
}

/// HELD OUT — a retail pharmacy system: DEA numbers, NDCs, RxNorm, cardholder ids, fax numbers.
fn pharmacy() -> Schema {
    use Class::*;
    Schema {
        name: "pharmacy",
        shaped_after: "a retail pharmacy system: patients, prescribers, prescriptions, fills, insurance",
        held_out: true,
        preamble: "",
        tables: vec![
            Table {
                name: "ph_patient",
                rows: N_PATIENTS,
                constraints: "PRIMARY KEY (pt_id)",
                columns: vec![
                    col("pt_id", "bigint", OtherId, key_int(300_000, 13)),
                    col("first_nm", "text", Names, g(given)),
                    col("last_nm", "text", Names, g(family)),
                    col("dob", "date", Dates, g(|r| date(r, 1930, 2020))),
                    col("phone_num", "text", Phone, g(phone)),
                    col("addr_line1", "text", Geography, g(street)),
                    col("city", "text", Geography, g(|r| r.pick(CITIES).to_owned())),
                    col("state", "char(2)", Safe, g(|r| r.pick(STATES).to_owned())),
                    col(
                        "zip",
                        "varchar(10)",
                        Geography,
                        g(|r| format!("{}-{}", zip5(r), r.digits(4))),
                    ),
                    col(
                        "allergies",
                        "text[]",
                        Safe,
                        one_of(&["{}", "{penicillin}", "{sulfa,latex}"]),
                    ),
                ],
            },
            Table {
                name: "prescriber",
                rows: 80,
                constraints: "PRIMARY KEY (dea_num)",
                columns: vec![
                    col("dea_num", "text", Licence, key_text("ph.dea", dea)),
                    col("npi", "text", OtherId, g(npi)),
                    col("name", "text", Names, g(full_name)),
                    col("fax", "text", Fax, g(phone)),
                    col(
                        "specialty",
                        "text",
                        Safe,
                        one_of(&["Family Medicine", "Internal Medicine", "Dentistry"]),
                    ),
                ],
            },
            Table {
                name: "rx",
                rows: 1600,
                constraints: "PRIMARY KEY (rx_number), FOREIGN KEY (pt_id) REFERENCES ph_patient (pt_id), FOREIGN KEY (dea_num) REFERENCES prescriber (dea_num)",
                columns: vec![
                    col(
                        "rx_number",
                        "text",
                        OtherId,
                        key_text("ph.rx", |r| format!("RX{}", r.digits(8))),
                    ),
                    col("pt_id", "bigint", OtherId, ref_int(300_000, 13, N_PATIENTS)),
                    col("dea_num", "text", Licence, ref_text("ph.dea", 80, dea)),
                    col("ndc", "text", Safe, g(ndc)),
                    col("rxnorm_cui", "integer", Safe, num(100_000, 2_000_000)),
                    col("qty", "numeric(8,2)", Safe, decimal(1, 180, 0)),
                    col("days_supply", "smallint", Safe, one_of(&["7", "30", "90"])),
                    col("written_dt", "date", Dates, g(|r| date(r, 2019, 2024))),
                    col("refills", "smallint", Safe, num(0, 11)),
                    col(
                        "sig",
                        "text",
                        Safe,
                        one_of(&[
                            "1 tab po qd",
                            "1 tab po bid",
                            "2 puffs q4h prn",
                            "apply bid",
                        ]),
                    ),
                ],
            },
            Table {
                name: "fill",
                rows: 3000,
                constraints: "",
                columns: vec![
                    col(
                        "rx_number",
                        "text",
                        OtherId,
                        ref_text("ph.rx", 1600, |r| format!("RX{}", r.digits(8))),
                    ),
                    col(
                        "filled_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2019, 2024)),
                    ),
                    col("copay", "numeric(8,2)", Safe, decimal(0, 80, 2)),
                    col("pharmacist", "text", Names, g(full_name)),
                ],
            },
            Table {
                name: "coverage",
                rows: 450,
                constraints: "FOREIGN KEY (pt_id) REFERENCES ph_patient (pt_id)",
                columns: vec![
                    col("pt_id", "bigint", OtherId, ref_int(300_000, 13, N_PATIENTS)),
                    col(
                        "bin",
                        "char(6)",
                        Safe,
                        one_of(&["610014", "004336", "610502", "003858"]),
                    ),
                    col(
                        "pcn",
                        "text",
                        Safe,
                        one_of(&["ADV", "MEDDPRIME", "A4", "9999"]),
                    ),
                    col(
                        "group_id",
                        "text",
                        Safe,
                        one_of(&["RX1234", "HLTH77", "GRP0420"]),
                    ),
                    col("cardholder_id", "text", HealthPlan, g(member_id)),
                    col("person_code", "char(2)", Safe, one_of(&["01", "02", "03"])),
                ],
            },
        ],
    }
}

/// HELD OUT — remote patient monitoring: device identifiers (HIBCC UDIs, IMEIs, MACs),
/// GPS coordinates, vehicle data of transport, names in several scripts.
fn telemetry() -> Schema {
    use Class::*;
    Schema {
        name: "telemetry",
        shaped_after: "a remote patient monitoring service: enrolled patients, devices, readings, transport",
        held_out: true,
        preamble: "",
        tables: vec![
            Table {
                name: "enrollee",
                rows: N_PATIENTS,
                constraints: "PRIMARY KEY (enrollee_id)",
                columns: vec![
                    col("enrollee_id", "uuid", OtherId, key_uuid("tel.enrollee")),
                    col("display_name", "text", Names, g(full_name)),
                    col("guardian_name", "text", Names, opt(0.7, full_name)),
                    col("home_phone", "text", Phone, g(phone)),
                    col("enrolled_on", "date", Dates, g(|r| date(r, 2020, 2024))),
                    col(
                        "program",
                        "text",
                        Safe,
                        one_of(&["CHF", "COPD", "HTN", "DM2"]),
                    ),
                    col(
                        "fingerprint_template",
                        "bytea",
                        Biometric,
                        opt(0.8, |r| bytes_hex(r, 48)),
                    ),
                ],
            },
            Table {
                name: "device",
                rows: 450,
                constraints: "PRIMARY KEY (device_id), UNIQUE (imei), FOREIGN KEY (enrollee_id) REFERENCES enrollee (enrollee_id)",
                columns: vec![
                    col("device_id", "uuid", OtherId, key_uuid("tel.device")),
                    col(
                        "enrollee_id",
                        "uuid",
                        OtherId,
                        ref_uuid("tel.enrollee", N_PATIENTS),
                    ),
                    col("udi", "text", Device, g(udi_hibcc)),
                    col("imei", "text", Device, key_text("tel.imei", imei)),
                    col("mac", "macaddr", Device, g(mac)),
                    col(
                        "kind",
                        "text",
                        Safe,
                        one_of(&["bp-cuff", "scale", "pulse-ox", "glucometer"]),
                    ),
                    col(
                        "firmware",
                        "text",
                        Safe,
                        one_of(&["1.4.2", "1.5.0", "2.0.1"]),
                    ),
                ],
            },
            Table {
                name: "reading",
                rows: 5000,
                constraints: "",
                columns: vec![
                    col("device_id", "uuid", OtherId, ref_uuid("tel.device", 450)),
                    col(
                        "measured_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2021, 2024)),
                    ),
                    col("systolic", "smallint", Safe, num(90, 190)),
                    col("diastolic", "smallint", Safe, num(50, 120)),
                    col("spo2", "numeric(4,1)", Safe, decimal(85, 100, 1)),
                    col("weight_kg", "numeric(5,1)", Safe, decimal(40, 180, 1)),
                    col(
                        "gps",
                        "point",
                        Geography,
                        g(|r| format!("({},{})", lon(r), lat(r))),
                    ),
                ],
            },
            Table {
                name: "transport",
                rows: 300,
                constraints: "PRIMARY KEY (trip_id), FOREIGN KEY (enrollee_id) REFERENCES enrollee (enrollee_id)",
                columns: vec![
                    col("trip_id", "bigint", OtherId, key_int(10, 10)),
                    col(
                        "enrollee_id",
                        "uuid",
                        OtherId,
                        ref_uuid("tel.enrollee", N_PATIENTS),
                    ),
                    col("vehicle_vin", "text", Vehicle, g(vin)),
                    col("plate", "text", Vehicle, g(plate)),
                    col(
                        "pickup_at",
                        "timestamptz",
                        Dates,
                        g(|r| timestamp(r, 2021, 2024)),
                    ),
                    col("pickup_lat", "double precision", Geography, g(lat)),
                    col("pickup_lon", "double precision", Geography, g(lon)),
                    col("miles", "numeric(6,1)", Safe, decimal(1, 80, 1)),
                ],
            },
        ],
    }
}

/// Every schema of the corpus (held-out ones flagged).
pub fn all() -> Vec<Schema> {
    vec![
        ehr(),
        claims(),
        lab(),
        imaging(),
        portal(),
        pharmacy(),
        telemetry(),
    ]
}

impl Schema {
    /// DDL and INSERTs of the whole schema, in FK order (tables are listed parents first).
    pub fn sql(&self, seed: u64) -> String {
        let mut out = String::new();
        out.push_str(self.preamble);
        out.push('\n');
        for t in &self.tables {
            let cols: Vec<String> = t
                .columns
                .iter()
                .map(|c| format!("\"{}\" {}", c.name, c.sql_type))
                .collect();
            let constraints = if t.constraints.is_empty() {
                String::new()
            } else {
                format!(", {}", t.constraints)
            };
            out.push_str(&format!(
                "CREATE TABLE \"{}\" ({}{constraints});\n",
                t.name,
                cols.join(", ")
            ));
        }
        for t in &self.tables {
            let mut r = Rng::new(seed ^ h64(t.name, 0));
            for chunk in (0..t.rows).collect::<Vec<_>>().chunks(500) {
                out.push_str(&t.insert_sql(chunk, &mut r));
                out.push_str(";\n");
            }
        }
        out
    }

    /// `(table, column, class)` of every column.
    pub fn labels(&self) -> Vec<(String, String, Class)> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .map(move |c| (format!("public.{}", t.name), c.name.to_owned(), c.class))
            })
            .collect()
    }
}
