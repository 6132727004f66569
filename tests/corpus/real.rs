//! Schemas taken from the published DDL of real health systems — table and column names, types
//! and keys as their projects publish them; the values are generated here in the shapes those
//! systems' public synthetic samples have (no real data). Every column was labelled with its
//! Safe Harbor class before the proposer was run on it. First measured untuned (OMOP: 3 of 76
//! identifier columns proposed safe, 0.96 of safe columns kept safe; MIMIC-IV: 6 of 49 and
//! 0.81), then tuned on (both are tuning schemas now; `openmrs` and `i2b2` below are held out).
//!
//! - `omop`: the OMOP Common Data Model 5.3.1 (OHDSI, PostgreSQL DDL), the clinical tables and
//!   their keys, with Synthea-to-OMOP shaped values (`person_source_value` a Synthea uuid,
//!   concept ids of seven to eight digits, `*_source_value` codes, free-text notes).
//! - `mimic`: MIMIC-IV's `hosp` and `icu` modules (MIT-LCP mimic-code, PostgreSQL `create.sql`
//!   and `constraint.sql`): composite keys with timestamps (`services`, `outputevents`), text
//!   keys (`poe_id`), a drug name inside a primary key (`prescriptions`), dictionary tables, with
//!   values shaped like the MIMIC-IV demo (dates shifted into the 2100s, eight-digit ids).
//! - `openmrs` (held out: only aggregates are printed, and only the first run's invariant is
//!   asserted): OpenMRS core's people, names, addresses, identifiers, encounters, observations,
//!   users and locations, with the audit columns (`creator`, `date_created`, `voided_by`, `uuid`)
//!   every OpenMRS table carries.
//! - `i2b2` (held out, likewise): the i2b2 data repository's star schema — a seven-part primary
//!   key with a timestamp in `observation_fact`, text keys, `*_blob` free text, no declared
//!   foreign key.

use super::values::*;
use super::*;

const PERSONS: u64 = 300;
const VISITS: u64 = 900;

fn concept() -> Gen {
    Box::new(|r, _| Some(r.range(3_000_000, 46_000_000).to_string()))
}
fn concept_opt() -> Gen {
    Box::new(|r, _| {
        if r.chance(0.3) {
            Some("0".into())
        } else {
            Some(r.range(3_000_000, 46_000_000).to_string())
        }
    })
}
fn date_in(lo_year: i64, hi_year: i64) -> Gen {
    Box::new(move |r, _| {
        Some(format!(
            "{}-{:02}-{:02}",
            r.range(lo_year, hi_year),
            r.range(1, 12),
            r.range(1, 28)
        ))
    })
}
fn datetime_in(lo_year: i64, hi_year: i64) -> Gen {
    Box::new(move |r, _| {
        Some(format!(
            "{}-{:02}-{:02} {:02}:{:02}:00",
            r.range(lo_year, hi_year),
            r.range(1, 12),
            r.range(1, 28),
            r.range(0, 23),
            r.range(0, 59)
        ))
    })
}
fn seq() -> Gen {
    Box::new(|_, i| Some((i + 1).to_string()))
}
fn refs(n: u64) -> Gen {
    Box::new(move |r, _| Some((r.below(n) + 1).to_string()))
}
fn refs_opt(n: u64, p: f64) -> Gen {
    Box::new(move |r, _| {
        if r.chance(p) {
            None
        } else {
            Some((r.below(n) + 1).to_string())
        }
    })
}

/// OMOP CDM 5.3.1: person, location, care_site, provider, visit_occurrence,
/// condition_occurrence, drug_exposure, measurement, observation, death, note,
/// payer_plan_period.
pub fn omop() -> Schema {
    use Class::*;
    Schema {
        name: "omop",
        shaped_after: "OMOP CDM 5.3.1 (OHDSI CommonDataModel, PostgreSQL DDL)",
        held_out: false,
        preamble: "",
        tables: vec![
            Table {
                name: "location",
                rows: 200,
                constraints: "PRIMARY KEY (location_id)",
                columns: vec![
                    col("location_id", "integer", OtherId, seq()),
                    col("address_1", "varchar(50)", Geography, g(street)),
                    col(
                        "address_2",
                        "varchar(50)",
                        Geography,
                        opt(0.9, |r| format!("Apt {}", r.range(1, 40))),
                    ),
                    col(
                        "city",
                        "varchar(50)",
                        Geography,
                        g(|r| r.pick(CITIES).to_owned()),
                    ),
                    col(
                        "state",
                        "varchar(2)",
                        Safe,
                        one_of(&["MA", "NY", "CA", "TX"]),
                    ),
                    col("zip", "varchar(9)", Geography, g(zip5)),
                    col(
                        "county",
                        "varchar(20)",
                        Geography,
                        one_of(&["Suffolk", "Middlesex", "Kings", "Travis"]),
                    ),
                    col(
                        "location_source_value",
                        "varchar(50)",
                        Geography,
                        g(|r| format!("{} {}", street(r), zip5(r))),
                    ),
                ],
            },
            Table {
                name: "care_site",
                rows: 20,
                constraints: "PRIMARY KEY (care_site_id), FOREIGN KEY (location_id) REFERENCES location (location_id)",
                columns: vec![
                    col("care_site_id", "integer", OtherId, seq()),
                    col(
                        "care_site_name",
                        "varchar(255)",
                        Safe,
                        one_of(&[
                            "General Hospital",
                            "Northside Clinic",
                            "Harbor Medical Center",
                        ]),
                    ),
                    col("place_of_service_concept_id", "integer", Safe, concept()),
                    col("location_id", "integer", OtherId, refs(200)),
                    col(
                        "care_site_source_value",
                        "varchar(50)",
                        Safe,
                        g(|r| format!("CS{}", r.digits(4))),
                    ),
                    col(
                        "place_of_service_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["inpatient", "outpatient", "emergency"]),
                    ),
                ],
            },
            Table {
                name: "provider",
                rows: 60,
                constraints: "PRIMARY KEY (provider_id), FOREIGN KEY (care_site_id) REFERENCES care_site (care_site_id)",
                columns: vec![
                    col("provider_id", "integer", OtherId, seq()),
                    col("provider_name", "varchar(255)", Names, g(full_name)),
                    col("npi", "varchar(20)", OtherId, g(npi)),
                    col("dea", "varchar(20)", Licence, opt(0.4, dea)),
                    col("specialty_concept_id", "integer", Safe, concept()),
                    col("care_site_id", "integer", OtherId, refs(20)),
                    col("year_of_birth", "integer", Dates, num(1940, 1995)),
                    col(
                        "gender_concept_id",
                        "integer",
                        Safe,
                        one_of(&["8507", "8532"]),
                    ),
                    col(
                        "provider_source_value",
                        "varchar(50)",
                        OtherId,
                        key_uuid("omop-provider"),
                    ),
                    col(
                        "specialty_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["Cardiology", "Family Practice", "Oncology"]),
                    ),
                    col(
                        "specialty_source_concept_id",
                        "integer",
                        Safe,
                        concept_opt(),
                    ),
                    col(
                        "gender_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["M", "F"]),
                    ),
                    col("gender_source_concept_id", "integer", Safe, concept_opt()),
                ],
            },
            Table {
                name: "person",
                rows: PERSONS,
                constraints: "PRIMARY KEY (person_id), FOREIGN KEY (location_id) REFERENCES location (location_id), \
                              FOREIGN KEY (provider_id) REFERENCES provider (provider_id), \
                              FOREIGN KEY (care_site_id) REFERENCES care_site (care_site_id)",
                columns: vec![
                    col("person_id", "integer", OtherId, seq()),
                    col(
                        "gender_concept_id",
                        "integer",
                        Safe,
                        one_of(&["8507", "8532"]),
                    ),
                    col("year_of_birth", "integer", Dates, num(1925, 2020)),
                    col("month_of_birth", "integer", Dates, num(1, 12)),
                    col("day_of_birth", "integer", Dates, num(1, 28)),
                    col(
                        "birth_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(1925, 2020),
                    ),
                    col(
                        "race_concept_id",
                        "integer",
                        Safe,
                        one_of(&["8527", "8516", "8515", "0"]),
                    ),
                    col(
                        "ethnicity_concept_id",
                        "integer",
                        Safe,
                        one_of(&["38003563", "38003564"]),
                    ),
                    col("location_id", "integer", OtherId, refs(200)),
                    col("provider_id", "integer", OtherId, refs_opt(60, 0.2)),
                    col("care_site_id", "integer", OtherId, refs_opt(20, 0.2)),
                    col(
                        "person_source_value",
                        "varchar(50)",
                        Mrn,
                        key_uuid("omop-person"),
                    ),
                    col(
                        "gender_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["M", "F"]),
                    ),
                    col("gender_source_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "race_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["white", "black", "asian", "other"]),
                    ),
                    col("race_source_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "ethnicity_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["hispanic", "nonhispanic"]),
                    ),
                    col(
                        "ethnicity_source_concept_id",
                        "integer",
                        Safe,
                        concept_opt(),
                    ),
                ],
            },
            Table {
                name: "visit_occurrence",
                rows: VISITS,
                constraints: "PRIMARY KEY (visit_occurrence_id), FOREIGN KEY (person_id) REFERENCES person (person_id), \
                              FOREIGN KEY (provider_id) REFERENCES provider (provider_id), \
                              FOREIGN KEY (care_site_id) REFERENCES care_site (care_site_id)",
                columns: vec![
                    col("visit_occurrence_id", "integer", OtherId, seq()),
                    col("person_id", "integer", OtherId, refs(PERSONS)),
                    col(
                        "visit_concept_id",
                        "integer",
                        Safe,
                        one_of(&["9201", "9202", "9203"]),
                    ),
                    col("visit_start_date", "date", Dates, date_in(2010, 2023)),
                    col(
                        "visit_start_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(2010, 2023),
                    ),
                    col("visit_end_date", "date", Dates, date_in(2010, 2023)),
                    col(
                        "visit_end_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(2010, 2023),
                    ),
                    col(
                        "visit_type_concept_id",
                        "integer",
                        Safe,
                        one_of(&["44818517", "32817"]),
                    ),
                    col("provider_id", "integer", OtherId, refs_opt(60, 0.1)),
                    col("care_site_id", "integer", OtherId, refs_opt(20, 0.1)),
                    col(
                        "visit_source_value",
                        "varchar(50)",
                        OtherId,
                        key_uuid("omop-encounter"),
                    ),
                    col("visit_source_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "admitting_source_concept_id",
                        "integer",
                        Safe,
                        concept_opt(),
                    ),
                    col(
                        "admitting_source_value",
                        "varchar(50)",
                        Safe,
                        opt(0.7, |r| r.pick(&["ER", "referral", "transfer"]).to_owned()),
                    ),
                    col("discharge_to_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "discharge_to_source_value",
                        "varchar(50)",
                        Safe,
                        opt(0.7, |r| r.pick(&["home", "SNF", "expired"]).to_owned()),
                    ),
                    col(
                        "preceding_visit_occurrence_id",
                        "integer",
                        OtherId,
                        refs_opt(VISITS, 0.5),
                    ),
                ],
            },
            Table {
                name: "condition_occurrence",
                rows: 1200,
                constraints: "PRIMARY KEY (condition_occurrence_id), FOREIGN KEY (person_id) REFERENCES person (person_id), \
                              FOREIGN KEY (visit_occurrence_id) REFERENCES visit_occurrence (visit_occurrence_id)",
                columns: vec![
                    col("condition_occurrence_id", "integer", OtherId, seq()),
                    col("person_id", "integer", OtherId, refs(PERSONS)),
                    col("condition_concept_id", "integer", Safe, concept()),
                    col("condition_start_date", "date", Dates, date_in(2010, 2023)),
                    col(
                        "condition_start_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(2010, 2023),
                    ),
                    col(
                        "condition_end_date",
                        "date",
                        Dates,
                        opt(0.5, |r| {
                            format!(
                                "20{}-0{}-1{}",
                                r.range(10, 23),
                                r.range(1, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col(
                        "condition_end_datetime",
                        "timestamp",
                        Dates,
                        opt(0.5, |r| {
                            format!(
                                "20{}-0{}-1{} 00:00:00",
                                r.range(10, 23),
                                r.range(1, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col(
                        "condition_type_concept_id",
                        "integer",
                        Safe,
                        one_of(&["32020", "38000245"]),
                    ),
                    col(
                        "condition_status_concept_id",
                        "integer",
                        Safe,
                        concept_opt(),
                    ),
                    col(
                        "stop_reason",
                        "varchar(20)",
                        Safe,
                        opt(0.9, |r| r.pick(&["resolved", "patient request"]).to_owned()),
                    ),
                    col("provider_id", "integer", OtherId, refs_opt(60, 0.1)),
                    col("visit_occurrence_id", "integer", OtherId, refs(VISITS)),
                    col("visit_detail_id", "integer", OtherId, Box::new(|_, _| None)),
                    col("condition_source_value", "varchar(50)", Safe, g(snomed)),
                    col("condition_source_concept_id", "integer", Safe, concept()),
                    col(
                        "condition_status_source_value",
                        "varchar(50)",
                        Safe,
                        opt(0.8, |r| r.pick(&["active", "resolved"]).to_owned()),
                    ),
                ],
            },
            Table {
                name: "drug_exposure",
                rows: 1200,
                constraints: "PRIMARY KEY (drug_exposure_id), FOREIGN KEY (person_id) REFERENCES person (person_id)",
                columns: vec![
                    col("drug_exposure_id", "integer", OtherId, seq()),
                    col("person_id", "integer", OtherId, refs(PERSONS)),
                    col("drug_concept_id", "integer", Safe, concept()),
                    col(
                        "drug_exposure_start_date",
                        "date",
                        Dates,
                        date_in(2010, 2023),
                    ),
                    col(
                        "drug_exposure_start_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(2010, 2023),
                    ),
                    col("drug_exposure_end_date", "date", Dates, date_in(2010, 2023)),
                    col(
                        "drug_exposure_end_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(2010, 2023),
                    ),
                    col(
                        "verbatim_end_date",
                        "date",
                        Dates,
                        opt(0.7, |r| {
                            format!("2019-0{}-1{}", r.range(1, 9), r.range(0, 9))
                        }),
                    ),
                    col(
                        "drug_type_concept_id",
                        "integer",
                        Safe,
                        one_of(&["38000177", "32838"]),
                    ),
                    col(
                        "stop_reason",
                        "varchar(20)",
                        Safe,
                        opt(0.9, |r| r.pick(&["completed", "adverse event"]).to_owned()),
                    ),
                    col("refills", "integer", Safe, num(0, 5)),
                    col("quantity", "numeric", Safe, decimal(1, 90, 1)),
                    col(
                        "days_supply",
                        "integer",
                        Safe,
                        one_of(&["7", "14", "30", "90"]),
                    ),
                    col(
                        "sig",
                        "text",
                        Safe,
                        one_of(&["1 tab PO daily", "2 tabs PO BID", "apply topically TID"]),
                    ),
                    col("route_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "lot_number",
                        "varchar(50)",
                        Device,
                        opt(0.5, |r| format!("L{}{}", r.letters(2), r.digits(6))),
                    ),
                    col("provider_id", "integer", OtherId, refs_opt(60, 0.1)),
                    col(
                        "visit_occurrence_id",
                        "integer",
                        OtherId,
                        refs_opt(VISITS, 0.1),
                    ),
                    col("drug_source_value", "varchar(50)", Safe, g(ndc)),
                    col("drug_source_concept_id", "integer", Safe, concept()),
                    col(
                        "route_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["oral", "topical", "IV"]),
                    ),
                    col(
                        "dose_unit_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["mg", "mL", "tab"]),
                    ),
                ],
            },
            Table {
                name: "measurement",
                rows: 1500,
                constraints: "PRIMARY KEY (measurement_id), FOREIGN KEY (person_id) REFERENCES person (person_id)",
                columns: vec![
                    col("measurement_id", "integer", OtherId, seq()),
                    col("person_id", "integer", OtherId, refs(PERSONS)),
                    col("measurement_concept_id", "integer", Safe, concept()),
                    col("measurement_date", "date", Dates, date_in(2010, 2023)),
                    col(
                        "measurement_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(2010, 2023),
                    ),
                    col(
                        "measurement_time",
                        "varchar(10)",
                        Safe,
                        g(|r| format!("{:02}:{:02}", r.range(0, 23), r.range(0, 59))),
                    ),
                    col(
                        "measurement_type_concept_id",
                        "integer",
                        Safe,
                        one_of(&["44818702", "32856"]),
                    ),
                    col("operator_concept_id", "integer", Safe, concept_opt()),
                    col("value_as_number", "numeric", Safe, decimal(0, 300, 2)),
                    col("value_as_concept_id", "integer", Safe, concept_opt()),
                    col("unit_concept_id", "integer", Safe, concept_opt()),
                    col("range_low", "numeric", Safe, decimal(0, 50, 1)),
                    col("range_high", "numeric", Safe, decimal(50, 200, 1)),
                    col("provider_id", "integer", OtherId, refs_opt(60, 0.1)),
                    col(
                        "visit_occurrence_id",
                        "integer",
                        OtherId,
                        refs_opt(VISITS, 0.1),
                    ),
                    col("measurement_source_value", "varchar(50)", Safe, g(loinc)),
                    col("measurement_source_concept_id", "integer", Safe, concept()),
                    col(
                        "unit_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["mg/dL", "mmol/L", "kg"]),
                    ),
                    col(
                        "value_source_value",
                        "varchar(50)",
                        Safe,
                        g(|r| format!("{}.{}", r.range(0, 300), r.range(0, 9))),
                    ),
                ],
            },
            Table {
                name: "death",
                rows: 30,
                constraints: "FOREIGN KEY (person_id) REFERENCES person (person_id)",
                columns: vec![
                    col(
                        "person_id",
                        "integer",
                        OtherId,
                        Box::new(|_, i| Some((i * 7 + 1).to_string())),
                    ),
                    col("death_date", "date", Dates, date_in(2015, 2023)),
                    col(
                        "death_datetime",
                        "timestamp",
                        Dates,
                        datetime_in(2015, 2023),
                    ),
                    col(
                        "death_type_concept_id",
                        "integer",
                        Safe,
                        one_of(&["38003569", "32817"]),
                    ),
                    col("cause_concept_id", "integer", Safe, concept()),
                    col("cause_source_value", "varchar(50)", Safe, g(snomed)),
                    col("cause_source_concept_id", "integer", Safe, concept()),
                ],
            },
            Table {
                name: "note",
                rows: 300,
                constraints: "PRIMARY KEY (note_id), FOREIGN KEY (person_id) REFERENCES person (person_id)",
                columns: vec![
                    col("note_id", "integer", OtherId, seq()),
                    col("person_id", "integer", OtherId, refs(PERSONS)),
                    col("note_date", "date", Dates, date_in(2010, 2023)),
                    col("note_datetime", "timestamp", Dates, datetime_in(2010, 2023)),
                    col(
                        "note_type_concept_id",
                        "integer",
                        Safe,
                        one_of(&["44814637", "32831"]),
                    ),
                    col("note_class_concept_id", "integer", Safe, concept()),
                    col(
                        "note_title",
                        "varchar(250)",
                        Safe,
                        one_of(&["Progress note", "Discharge summary", "Telephone encounter"]),
                    ),
                    col("note_text", "text", Names, g(note)),
                    col("encoding_concept_id", "integer", Safe, one_of(&["32678"])),
                    col("language_concept_id", "integer", Safe, one_of(&["4180186"])),
                    col("provider_id", "integer", OtherId, refs_opt(60, 0.1)),
                    col(
                        "visit_occurrence_id",
                        "integer",
                        OtherId,
                        refs_opt(VISITS, 0.1),
                    ),
                    col(
                        "note_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["progress", "discharge", "phone"]),
                    ),
                ],
            },
            Table {
                name: "payer_plan_period",
                rows: 300,
                constraints: "PRIMARY KEY (payer_plan_period_id), FOREIGN KEY (person_id) REFERENCES person (person_id)",
                columns: vec![
                    col("payer_plan_period_id", "integer", OtherId, seq()),
                    col("person_id", "integer", OtherId, refs(PERSONS)),
                    col(
                        "payer_plan_period_start_date",
                        "date",
                        Dates,
                        date_in(2010, 2020),
                    ),
                    col(
                        "payer_plan_period_end_date",
                        "date",
                        Dates,
                        date_in(2020, 2024),
                    ),
                    col("payer_concept_id", "integer", Safe, concept()),
                    col(
                        "payer_source_value",
                        "varchar(50)",
                        Safe,
                        one_of(&["Medicare", "Medicaid", "Blue Cross", "Aetna"]),
                    ),
                    col("payer_source_concept_id", "integer", Safe, concept_opt()),
                    col("plan_concept_id", "integer", Safe, concept_opt()),
                    col("plan_source_value", "varchar(50)", HealthPlan, g(member_id)),
                    col("plan_source_concept_id", "integer", Safe, concept_opt()),
                    col("sponsor_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "sponsor_source_value",
                        "varchar(50)",
                        Safe,
                        opt(0.6, |r| r.pick(&["Acme Corp", "City of Boston"]).to_owned()),
                    ),
                    col("sponsor_source_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "family_source_value",
                        "varchar(50)",
                        HealthPlan,
                        opt(0.5, |r| format!("FAM{}", r.digits(8))),
                    ),
                    col("stop_reason_concept_id", "integer", Safe, concept_opt()),
                    col(
                        "stop_reason_source_value",
                        "varchar(50)",
                        Safe,
                        opt(0.8, |r| r.pick(&["lapsed", "switched"]).to_owned()),
                    ),
                    col(
                        "stop_reason_source_concept_id",
                        "integer",
                        Safe,
                        concept_opt(),
                    ),
                ],
            },
        ],
    }
}

const SUBJECTS: u64 = 200;
const ADMISSIONS: u64 = 500;
const STAYS: u64 = 300;
const POES: u64 = 600;

fn subject() -> Gen {
    Box::new(|r, _| Some((10_000_032 + r.below(SUBJECTS) * 17).to_string()))
}
fn hadm() -> Gen {
    Box::new(|r, _| Some((20_000_019 + r.below(ADMISSIONS) * 13).to_string()))
}
fn stay() -> Gen {
    Box::new(|r, _| Some((30_000_153 + r.below(STAYS) * 11).to_string()))
}
fn shifted_ts() -> Gen {
    datetime_in(2110, 2210)
}

/// MIMIC-IV 2.x: hosp and icu tables, as mimic-code's PostgreSQL build creates them.
pub fn mimic() -> Schema {
    use Class::*;
    Schema {
        name: "mimic",
        shaped_after: "MIMIC-IV (MIT-LCP mimic-code, buildmimic/postgres)",
        held_out: false,
        preamble: "",
        tables: vec![
            Table {
                name: "patients",
                rows: SUBJECTS,
                constraints: "PRIMARY KEY (subject_id)",
                columns: vec![
                    col("subject_id", "integer", OtherId, key_int(10_000_032, 17)),
                    col("gender", "char(1)", Safe, one_of(&["M", "F"])),
                    col("anchor_age", "smallint", Dates, num(18, 91)),
                    col("anchor_year", "smallint", Safe, num(2110, 2190)),
                    col(
                        "anchor_year_group",
                        "varchar(20)",
                        Safe,
                        one_of(&["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"]),
                    ),
                    col(
                        "dod",
                        "date",
                        Dates,
                        opt(0.8, |r| {
                            format!(
                                "21{}-0{}-1{}",
                                r.range(10, 99),
                                r.range(1, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                ],
            },
            Table {
                name: "admissions",
                rows: ADMISSIONS,
                constraints: "PRIMARY KEY (hadm_id), FOREIGN KEY (subject_id) REFERENCES patients (subject_id)",
                columns: vec![
                    col("subject_id", "integer", OtherId, subject()),
                    col("hadm_id", "integer", OtherId, key_int(20_000_019, 13)),
                    col("admittime", "timestamp", Dates, shifted_ts()),
                    col("dischtime", "timestamp", Dates, shifted_ts()),
                    col(
                        "deathtime",
                        "timestamp",
                        Dates,
                        opt(0.9, |r| {
                            format!(
                                "21{}-0{}-1{} 0{}:00:00",
                                r.range(10, 99),
                                r.range(1, 9),
                                r.range(0, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col(
                        "admission_type",
                        "varchar(40)",
                        Safe,
                        one_of(&["EW EMER.", "URGENT", "ELECTIVE", "OBSERVATION ADMIT"]),
                    ),
                    col(
                        "admission_location",
                        "varchar(60)",
                        Safe,
                        one_of(&[
                            "EMERGENCY ROOM",
                            "PHYSICIAN REFERRAL",
                            "TRANSFER FROM HOSPITAL",
                        ]),
                    ),
                    col(
                        "discharge_location",
                        "varchar(60)",
                        Safe,
                        one_of(&[
                            "HOME",
                            "HOME HEALTH CARE",
                            "SKILLED NURSING FACILITY",
                            "DIED",
                        ]),
                    ),
                    col(
                        "insurance",
                        "varchar(255)",
                        Safe,
                        one_of(&["Medicare", "Medicaid", "Other"]),
                    ),
                    col("language", "varchar(10)", Safe, one_of(&["ENGLISH", "?"])),
                    col(
                        "marital_status",
                        "varchar(30)",
                        Safe,
                        one_of(&["MARRIED", "SINGLE", "WIDOWED", "DIVORCED"]),
                    ),
                    col(
                        "race",
                        "varchar(80)",
                        Safe,
                        one_of(&[
                            "WHITE",
                            "BLACK/AFRICAN AMERICAN",
                            "HISPANIC/LATINO - PUERTO RICAN",
                            "ASIAN",
                        ]),
                    ),
                    col(
                        "edregtime",
                        "timestamp",
                        Dates,
                        opt(0.4, |r| {
                            format!(
                                "21{}-0{}-1{} 1{}:2{}:00",
                                r.range(10, 99),
                                r.range(1, 9),
                                r.range(0, 9),
                                r.range(0, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col(
                        "edouttime",
                        "timestamp",
                        Dates,
                        opt(0.4, |r| {
                            format!(
                                "21{}-0{}-1{} 1{}:4{}:00",
                                r.range(10, 99),
                                r.range(1, 9),
                                r.range(0, 9),
                                r.range(0, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col(
                        "hospital_expire_flag",
                        "smallint",
                        Safe,
                        one_of(&["0", "0", "0", "1"]),
                    ),
                ],
            },
            Table {
                name: "transfers",
                rows: 900,
                constraints: "PRIMARY KEY (transfer_id), FOREIGN KEY (subject_id) REFERENCES patients (subject_id)",
                columns: vec![
                    col("subject_id", "integer", OtherId, subject()),
                    col("hadm_id", "integer", OtherId, hadm()),
                    col("transfer_id", "integer", OtherId, key_int(30_000_000, 7)),
                    col(
                        "eventtype",
                        "varchar(10)",
                        Safe,
                        one_of(&["admit", "transfer", "discharge", "ED"]),
                    ),
                    col(
                        "careunit",
                        "varchar(255)",
                        Safe,
                        one_of(&[
                            "Emergency Department",
                            "Medicine",
                            "Medical Intensive Care Unit (MICU)",
                            "Discharge Lounge",
                        ]),
                    ),
                    col("intime", "timestamp", Dates, shifted_ts()),
                    col("outtime", "timestamp", Dates, shifted_ts()),
                ],
            },
            Table {
                name: "services",
                rows: 500,
                constraints: "PRIMARY KEY (hadm_id, transfertime, curr_service), FOREIGN KEY (subject_id) REFERENCES patients (subject_id), \
                              FOREIGN KEY (hadm_id) REFERENCES admissions (hadm_id)",
                columns: vec![
                    col("subject_id", "integer", OtherId, subject()),
                    col("hadm_id", "integer", OtherId, hadm()),
                    col("transfertime", "timestamp", Dates, shifted_ts()),
                    col(
                        "prev_service",
                        "varchar(10)",
                        Safe,
                        opt(0.6, |r| r.pick(&["MED", "SURG", "CMED"]).to_owned()),
                    ),
                    col(
                        "curr_service",
                        "varchar(10)",
                        Safe,
                        one_of(&["MED", "SURG", "CMED", "NMED", "ORTHO"]),
                    ),
                ],
            },
            Table {
                name: "diagnoses_icd",
                rows: 1500,
                constraints: "PRIMARY KEY (hadm_id, seq_num, icd_code, icd_version), FOREIGN KEY (subject_id) REFERENCES patients (subject_id), \
                              FOREIGN KEY (hadm_id) REFERENCES admissions (hadm_id)",
                columns: vec![
                    col("subject_id", "integer", OtherId, subject()),
                    col("hadm_id", "integer", OtherId, hadm()),
                    col("seq_num", "integer", Safe, num(1, 20)),
                    col("icd_code", "char(7)", Safe, g(icd10)),
                    col("icd_version", "smallint", Safe, one_of(&["9", "10"])),
                ],
            },
            Table {
                name: "d_labitems",
                rows: 60,
                constraints: "PRIMARY KEY (itemid)",
                columns: vec![
                    col("itemid", "integer", Safe, key_int(50801, 3)),
                    col(
                        "label",
                        "varchar(50)",
                        Safe,
                        one_of(&["Glucose", "Potassium", "Sodium", "Creatinine", "Hemoglobin"]),
                    ),
                    col(
                        "fluid",
                        "varchar(50)",
                        Safe,
                        one_of(&["Blood", "Urine", "Other Body Fluid"]),
                    ),
                    col(
                        "category",
                        "varchar(50)",
                        Safe,
                        one_of(&["Chemistry", "Hematology", "Blood Gas"]),
                    ),
                ],
            },
            Table {
                name: "labevents",
                rows: 2000,
                constraints: "PRIMARY KEY (labevent_id), FOREIGN KEY (subject_id) REFERENCES patients (subject_id), \
                              FOREIGN KEY (itemid) REFERENCES d_labitems (itemid)",
                columns: vec![
                    col("labevent_id", "integer", OtherId, seq()),
                    col("subject_id", "integer", OtherId, subject()),
                    col(
                        "hadm_id",
                        "integer",
                        OtherId,
                        Box::new(|r, _| {
                            if r.chance(0.3) {
                                None
                            } else {
                                Some((20_000_019 + r.below(ADMISSIONS) * 13).to_string())
                            }
                        }),
                    ),
                    col(
                        "specimen_id",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some(r.range(1_000_000, 99_999_999).to_string())),
                    ),
                    col(
                        "itemid",
                        "integer",
                        Safe,
                        Box::new(|r, _| Some((50801 + r.below(60) * 3).to_string())),
                    ),
                    col("charttime", "timestamp", Dates, shifted_ts()),
                    col("storetime", "timestamp", Dates, shifted_ts()),
                    col(
                        "value",
                        "varchar(200)",
                        Safe,
                        g(|r| format!("{}.{}", r.range(0, 250), r.range(0, 9))),
                    ),
                    col("valuenum", "double precision", Safe, decimal(0, 250, 1)),
                    col(
                        "valueuom",
                        "varchar(20)",
                        Safe,
                        one_of(&["mg/dL", "mEq/L", "g/dL", "%"]),
                    ),
                    col(
                        "ref_range_lower",
                        "double precision",
                        Safe,
                        decimal(0, 50, 1),
                    ),
                    col(
                        "ref_range_upper",
                        "double precision",
                        Safe,
                        decimal(50, 200, 1),
                    ),
                    col(
                        "flag",
                        "varchar(10)",
                        Safe,
                        opt(0.7, |_| "abnormal".to_owned()),
                    ),
                    col("priority", "varchar(7)", Safe, one_of(&["ROUTINE", "STAT"])),
                    col(
                        "comments",
                        "text",
                        Names,
                        opt(0.8, |r| format!("___ notified by phone at {}", phone(r))),
                    ),
                ],
            },
            Table {
                name: "poe",
                rows: POES,
                constraints: "PRIMARY KEY (poe_id), FOREIGN KEY (subject_id) REFERENCES patients (subject_id)",
                columns: vec![
                    col(
                        "poe_id",
                        "varchar(25)",
                        OtherId,
                        Box::new(|_, i| {
                            Some(format!(
                                "{}-{}",
                                10_000_032 + (i % SUBJECTS) * 17,
                                i / SUBJECTS + 1
                            ))
                        }),
                    ),
                    col(
                        "poe_seq",
                        "integer",
                        Safe,
                        Box::new(|_, i| Some((i / SUBJECTS + 1).to_string())),
                    ),
                    col(
                        "subject_id",
                        "integer",
                        OtherId,
                        Box::new(|_, i| Some((10_000_032 + (i % SUBJECTS) * 17).to_string())),
                    ),
                    col("hadm_id", "integer", OtherId, hadm()),
                    col("ordertime", "timestamp", Dates, shifted_ts()),
                    col(
                        "order_type",
                        "varchar(25)",
                        Safe,
                        one_of(&["Medications", "Lab", "Nutrition", "ADT orders"]),
                    ),
                    col(
                        "order_subtype",
                        "varchar(50)",
                        Safe,
                        opt(0.5, |r| r.pick(&["Admit", "Discharge", "Diet"]).to_owned()),
                    ),
                    col(
                        "transaction_type",
                        "varchar(15)",
                        Safe,
                        one_of(&["New", "D/C", "Change"]),
                    ),
                    col(
                        "discontinue_of_poe_id",
                        "varchar(25)",
                        OtherId,
                        opt(0.8, |r| {
                            format!("{}-{}", 10_000_032 + r.below(SUBJECTS) * 17, r.range(1, 3))
                        }),
                    ),
                    col(
                        "discontinued_by_poe_id",
                        "varchar(25)",
                        OtherId,
                        opt(0.8, |r| {
                            format!("{}-{}", 10_000_032 + r.below(SUBJECTS) * 17, r.range(1, 3))
                        }),
                    ),
                    col(
                        "order_status",
                        "varchar(15)",
                        Safe,
                        one_of(&["Active", "Inactive"]),
                    ),
                ],
            },
            Table {
                name: "prescriptions",
                rows: 800,
                constraints: "PRIMARY KEY (pharmacy_id, drug_type, drug), FOREIGN KEY (subject_id) REFERENCES patients (subject_id)",
                columns: vec![
                    col("subject_id", "integer", OtherId, subject()),
                    col("hadm_id", "integer", OtherId, hadm()),
                    col("pharmacy_id", "integer", OtherId, key_int(40_000_001, 9)),
                    col(
                        "poe_id",
                        "varchar(25)",
                        OtherId,
                        opt(0.2, |r| {
                            format!("{}-{}", 10_000_032 + r.below(SUBJECTS) * 17, r.range(1, 3))
                        }),
                    ),
                    col("poe_seq", "integer", Safe, num(1, 3)),
                    col("starttime", "timestamp", Dates, shifted_ts()),
                    col("stoptime", "timestamp", Dates, shifted_ts()),
                    col(
                        "drug_type",
                        "varchar(20)",
                        Safe,
                        one_of(&["MAIN", "BASE", "ADDITIVE"]),
                    ),
                    col(
                        "drug",
                        "varchar(255)",
                        Safe,
                        one_of(&[
                            "Heparin",
                            "Acetaminophen",
                            "Insulin",
                            "Furosemide",
                            "Sodium Chloride 0.9%",
                        ]),
                    ),
                    col(
                        "formulary_drug_cd",
                        "varchar(120)",
                        Safe,
                        one_of(&["HEPA5I", "ACET325", "INSULIN", "FURO40I"]),
                    ),
                    col(
                        "gsn",
                        "varchar(255)",
                        Safe,
                        g(|r| format!("{:06}", r.range(1000, 70000))),
                    ),
                    col("ndc", "varchar(25)", Safe, g(ndc)),
                    col(
                        "prod_strength",
                        "varchar(255)",
                        Safe,
                        one_of(&["5000 Units / mL", "325mg Tablet", "40mg/4mL Vial"]),
                    ),
                    col(
                        "form_rx",
                        "varchar(25)",
                        Safe,
                        opt(0.9, |_| "TABLET".to_owned()),
                    ),
                    col(
                        "dose_val_rx",
                        "varchar(100)",
                        Safe,
                        one_of(&["5000", "325-650", "40", "1"]),
                    ),
                    col(
                        "dose_unit_rx",
                        "varchar(50)",
                        Safe,
                        one_of(&["UNIT", "mg", "mL"]),
                    ),
                    col(
                        "form_val_disp",
                        "varchar(50)",
                        Safe,
                        one_of(&["1", "2", "0.5"]),
                    ),
                    col(
                        "form_unit_disp",
                        "varchar(50)",
                        Safe,
                        one_of(&["TAB", "mL", "VIAL"]),
                    ),
                    col(
                        "doses_per_24_hrs",
                        "real",
                        Safe,
                        one_of(&["1", "2", "3", "4"]),
                    ),
                    col("route", "varchar(50)", Safe, one_of(&["PO", "IV", "SC"])),
                ],
            },
            Table {
                name: "icustays",
                rows: STAYS,
                constraints: "PRIMARY KEY (stay_id), FOREIGN KEY (subject_id) REFERENCES patients (subject_id), \
                              FOREIGN KEY (hadm_id) REFERENCES admissions (hadm_id)",
                columns: vec![
                    col("subject_id", "integer", OtherId, subject()),
                    col("hadm_id", "integer", OtherId, hadm()),
                    col("stay_id", "integer", OtherId, key_int(30_000_153, 11)),
                    col(
                        "first_careunit",
                        "varchar(255)",
                        Safe,
                        one_of(&[
                            "Medical Intensive Care Unit (MICU)",
                            "Surgical ICU (SICU)",
                            "Coronary Care Unit (CCU)",
                        ]),
                    ),
                    col(
                        "last_careunit",
                        "varchar(255)",
                        Safe,
                        one_of(&[
                            "Medical Intensive Care Unit (MICU)",
                            "Surgical ICU (SICU)",
                            "Coronary Care Unit (CCU)",
                        ]),
                    ),
                    col("intime", "timestamp", Dates, shifted_ts()),
                    col("outtime", "timestamp", Dates, shifted_ts()),
                    col("los", "double precision", Safe, decimal(0, 30, 4)),
                ],
            },
            Table {
                name: "d_items",
                rows: 40,
                constraints: "PRIMARY KEY (itemid)",
                columns: vec![
                    col("itemid", "integer", Safe, key_int(220045, 5)),
                    col(
                        "label",
                        "varchar(100)",
                        Safe,
                        one_of(&["Heart Rate", "Foley", "Urine Out Void", "Chest Tube"]),
                    ),
                    col(
                        "abbreviation",
                        "varchar(50)",
                        Safe,
                        one_of(&["HR", "Foley", "Void", "CT"]),
                    ),
                    col(
                        "linksto",
                        "varchar(30)",
                        Safe,
                        one_of(&["chartevents", "outputevents", "datetimeevents"]),
                    ),
                    col(
                        "category",
                        "varchar(50)",
                        Safe,
                        one_of(&["Routine Vital Signs", "Output", "Alarms"]),
                    ),
                    col(
                        "unitname",
                        "varchar(50)",
                        Safe,
                        opt(0.4, |_| "mL".to_owned()),
                    ),
                    col(
                        "param_type",
                        "varchar(20)",
                        Safe,
                        one_of(&["Numeric", "Date and time", "Text"]),
                    ),
                    col(
                        "lownormalvalue",
                        "double precision",
                        Safe,
                        opt(0.7, |r| r.range(0, 60).to_string()),
                    ),
                    col(
                        "highnormalvalue",
                        "double precision",
                        Safe,
                        opt(0.7, |r| r.range(60, 200).to_string()),
                    ),
                ],
            },
            Table {
                name: "outputevents",
                rows: 1200,
                constraints: "PRIMARY KEY (stay_id, charttime, itemid), FOREIGN KEY (subject_id) REFERENCES patients (subject_id), \
                              FOREIGN KEY (stay_id) REFERENCES icustays (stay_id), FOREIGN KEY (itemid) REFERENCES d_items (itemid)",
                columns: vec![
                    col("subject_id", "integer", OtherId, subject()),
                    col("hadm_id", "integer", OtherId, hadm()),
                    col("stay_id", "integer", OtherId, stay()),
                    col("charttime", "timestamp", Dates, shifted_ts()),
                    col("storetime", "timestamp", Dates, shifted_ts()),
                    col(
                        "itemid",
                        "integer",
                        Safe,
                        Box::new(|r, _| Some((220045 + r.below(40) * 5).to_string())),
                    ),
                    col("value", "double precision", Safe, decimal(0, 900, 0)),
                    col("valueuom", "varchar(20)", Safe, one_of(&["mL"])),
                ],
            },
        ],
    }
}

const OM_PERSONS: u64 = 250;
const OM_USERS: u64 = 30;
const OM_LOCATIONS: u64 = 15;
const OM_ENCOUNTERS: u64 = 700;

/// A constraint text built once for the corpus's `&'static str` (tests only).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn om_uuid(ns: &'static str) -> Gen {
    key_uuid(ns)
}
fn om_user() -> Gen {
    Box::new(|r, _| Some((r.below(OM_USERS) + 1).to_string()))
}
fn om_user_opt(p: f64) -> Gen {
    Box::new(move |r, _| {
        if r.chance(p) {
            None
        } else {
            Some((r.below(OM_USERS) + 1).to_string())
        }
    })
}
fn om_created() -> Gen {
    datetime_in(2015, 2024)
}
fn om_changed(p: f64) -> Gen {
    Box::new(move |r, _| {
        if r.chance(p) {
            None
        } else {
            Some(format!(
                "20{}-0{}-1{} 0{}:1{}:00",
                r.range(16, 24),
                r.range(1, 9),
                r.range(0, 9),
                r.range(0, 9),
                r.range(0, 9)
            ))
        }
    })
}
fn om_voided() -> Gen {
    Box::new(|r, _| Some(if r.chance(0.05) { "true" } else { "false" }.into()))
}
fn om_void_reason() -> Gen {
    opt(0.95, |r| {
        r.pick(&["entered in error", "duplicate", "wrong patient chart"])
            .to_owned()
    })
}
/// An OpenMRS identifier (digits and a Luhn mod-30 check character after a dash).
fn openmrs_id(r: &mut Rng) -> String {
    let base = r.range(100_000, 999_999);
    let check = b"0123456789ACDEFGHJKLMNPRTUVWXY"[(base % 30) as usize] as char;
    format!("{base}-{check}")
}

/// OpenMRS core 2.x: people, their names, addresses and identifiers, encounters, observations,
/// users and locations, with the audit columns every OpenMRS table carries.
pub fn openmrs() -> Schema {
    use Class::*;
    let audit = || {
        vec![
            col("creator", "integer", OtherId, om_user()),
            col("date_created", "timestamp", Dates, om_created()),
            col("changed_by", "integer", OtherId, om_user_opt(0.7)),
            col("date_changed", "timestamp", Dates, om_changed(0.7)),
            col("voided", "boolean", Safe, om_voided()),
            col("voided_by", "integer", OtherId, om_user_opt(0.95)),
            col("date_voided", "timestamp", Dates, om_changed(0.95)),
            col("void_reason", "varchar(255)", Safe, om_void_reason()),
        ]
    };
    let audit_fk = "FOREIGN KEY (creator) REFERENCES users (user_id), FOREIGN KEY (changed_by) REFERENCES users (user_id), \
                    FOREIGN KEY (voided_by) REFERENCES users (user_id)";
    let with = |mut cols: Vec<Col>, extra: Vec<Col>| {
        cols.extend(extra);
        cols
    };
    Schema {
        name: "openmrs",
        shaped_after: "OpenMRS core 2.x (openmrs-core liquibase schema)",
        held_out: true,
        preamble: "",
        tables: vec![
            Table {
                name: "users",
                rows: OM_USERS,
                constraints: "PRIMARY KEY (user_id), UNIQUE (uuid)",
                columns: vec![
                    col("user_id", "integer", OtherId, seq()),
                    col(
                        "system_id",
                        "varchar(50)",
                        OtherId,
                        Box::new(|_, i| Some(format!("{}-{}", i + 1, (i * 7) % 10))),
                    ),
                    col(
                        "username",
                        "varchar(50)",
                        Names,
                        key_text("om-user", username),
                    ),
                    col(
                        "password",
                        "varchar(128)",
                        OtherId,
                        g(|r| bytes_hex(r, 64).trim_start_matches("\\x").to_owned()),
                    ),
                    col(
                        "salt",
                        "varchar(128)",
                        OtherId,
                        g(|r| bytes_hex(r, 64).trim_start_matches("\\x").to_owned()),
                    ),
                    col(
                        "secret_question",
                        "varchar(255)",
                        Safe,
                        opt(0.7, |r| {
                            r.pick(&["first pet?", "mother's maiden name?"]).to_owned()
                        }),
                    ),
                    col("secret_answer", "varchar(255)", Names, opt(0.7, family)),
                    col("date_created", "timestamp", Dates, om_created()),
                    col(
                        "retired",
                        "boolean",
                        Safe,
                        one_of(&["false", "false", "true"]),
                    ),
                    col("uuid", "char(38)", OtherId, om_uuid("om-users")),
                    col("email", "varchar(255)", Email, opt(0.4, email)),
                ],
            },
            Table {
                name: "location",
                rows: OM_LOCATIONS,
                constraints: "PRIMARY KEY (location_id), UNIQUE (uuid)",
                columns: vec![
                    col("location_id", "integer", OtherId, seq()),
                    col(
                        "name",
                        "varchar(255)",
                        Safe,
                        one_of(&[
                            "Outpatient Clinic",
                            "Inpatient Ward",
                            "Pharmacy",
                            "Laboratory",
                        ]),
                    ),
                    col(
                        "description",
                        "varchar(255)",
                        Safe,
                        opt(0.5, |_| "clinic site".to_owned()),
                    ),
                    col("address1", "varchar(255)", Safe, g(street)),
                    col(
                        "city_village",
                        "varchar(255)",
                        Safe,
                        g(|r| r.pick(CITIES).to_owned()),
                    ),
                    col("postal_code", "varchar(50)", Safe, g(zip5)),
                    col("retired", "boolean", Safe, one_of(&["false"])),
                    col("uuid", "char(38)", OtherId, om_uuid("om-location")),
                ],
            },
            Table {
                name: "person",
                rows: OM_PERSONS,
                constraints: leak(format!(
                    "PRIMARY KEY (person_id), UNIQUE (uuid), {audit_fk}"
                )),
                columns: with(
                    vec![
                        col("person_id", "integer", OtherId, seq()),
                        col("gender", "varchar(50)", Safe, one_of(&["M", "F", "O"])),
                        col("birthdate", "date", Dates, date_in(1930, 2020)),
                        col(
                            "birthdate_estimated",
                            "boolean",
                            Safe,
                            one_of(&["false", "false", "true"]),
                        ),
                        col(
                            "dead",
                            "boolean",
                            Safe,
                            one_of(&["false", "false", "false", "true"]),
                        ),
                        col(
                            "death_date",
                            "timestamp",
                            Dates,
                            opt(0.85, |r| {
                                format!(
                                    "20{}-0{}-1{} 00:00:00",
                                    r.range(10, 23),
                                    r.range(1, 9),
                                    r.range(0, 9)
                                )
                            }),
                        ),
                        col(
                            "cause_of_death",
                            "integer",
                            Safe,
                            opt(0.85, |r| r.range(5000, 160000).to_string()),
                        ),
                        col("uuid", "char(38)", OtherId, om_uuid("om-person")),
                        col(
                            "birthtime",
                            "time",
                            Dates,
                            opt(0.9, |r| {
                                format!("{:02}:{:02}:00", r.range(0, 23), r.range(0, 59))
                            }),
                        ),
                    ],
                    audit(),
                ),
            },
            Table {
                name: "person_name",
                rows: OM_PERSONS,
                constraints: "PRIMARY KEY (person_name_id), FOREIGN KEY (person_id) REFERENCES person (person_id)",
                columns: vec![
                    col("person_name_id", "integer", OtherId, seq()),
                    col("preferred", "boolean", Safe, one_of(&["true"])),
                    col(
                        "person_id",
                        "integer",
                        OtherId,
                        Box::new(|_, i| Some((i % OM_PERSONS + 1).to_string())),
                    ),
                    col(
                        "prefix",
                        "varchar(50)",
                        Safe,
                        opt(0.7, |r| r.pick(&["Mr.", "Mrs.", "Dr."]).to_owned()),
                    ),
                    col("given_name", "varchar(50)", Names, g(given)),
                    col("middle_name", "varchar(50)", Names, opt(0.6, given)),
                    col("family_name", "varchar(50)", Names, g(family)),
                    col("family_name2", "varchar(50)", Names, opt(0.9, family)),
                    col(
                        "degree",
                        "varchar(50)",
                        Safe,
                        opt(0.95, |_| "MD".to_owned()),
                    ),
                    col("creator", "integer", OtherId, om_user()),
                    col("date_created", "timestamp", Dates, om_created()),
                    col("uuid", "char(38)", OtherId, om_uuid("om-person-name")),
                ],
            },
            Table {
                name: "person_address",
                rows: OM_PERSONS,
                constraints: "PRIMARY KEY (person_address_id), FOREIGN KEY (person_id) REFERENCES person (person_id)",
                columns: vec![
                    col("person_address_id", "integer", OtherId, seq()),
                    col(
                        "person_id",
                        "integer",
                        OtherId,
                        Box::new(|_, i| Some((i % OM_PERSONS + 1).to_string())),
                    ),
                    col("preferred", "boolean", Safe, one_of(&["true"])),
                    col("address1", "varchar(255)", Geography, g(street)),
                    col(
                        "address2",
                        "varchar(255)",
                        Geography,
                        opt(0.8, |r| format!("Apt {}", r.range(1, 90))),
                    ),
                    col(
                        "city_village",
                        "varchar(255)",
                        Geography,
                        g(|r| r.pick(CITIES).to_owned()),
                    ),
                    col(
                        "state_province",
                        "varchar(255)",
                        Safe,
                        one_of(&["Massachusetts", "Nairobi County", "Kigali"]),
                    ),
                    col("postal_code", "varchar(50)", Geography, g(zip5)),
                    col(
                        "country",
                        "varchar(50)",
                        Safe,
                        one_of(&["USA", "Kenya", "Rwanda"]),
                    ),
                    col("latitude", "varchar(50)", Geography, opt(0.5, lat)),
                    col("longitude", "varchar(50)", Geography, opt(0.5, lon)),
                    col(
                        "county_district",
                        "varchar(255)",
                        Geography,
                        opt(0.5, |r| r.pick(&["Suffolk", "Kiambu", "Gasabo"]).to_owned()),
                    ),
                    col("date_created", "timestamp", Dates, om_created()),
                    col("uuid", "char(38)", OtherId, om_uuid("om-person-address")),
                ],
            },
            Table {
                name: "patient",
                rows: 200,
                constraints: "PRIMARY KEY (patient_id), FOREIGN KEY (patient_id) REFERENCES person (person_id)",
                columns: vec![
                    col("patient_id", "integer", OtherId, seq()),
                    col("creator", "integer", OtherId, om_user()),
                    col("date_created", "timestamp", Dates, om_created()),
                    col("voided", "boolean", Safe, om_voided()),
                    col(
                        "allergy_status",
                        "varchar(50)",
                        Safe,
                        one_of(&["Unknown", "No known allergies", "See list"]),
                    ),
                ],
            },
            Table {
                name: "patient_identifier",
                rows: 300,
                constraints: "PRIMARY KEY (patient_identifier_id), UNIQUE (uuid), FOREIGN KEY (patient_id) REFERENCES patient (patient_id), \
                              FOREIGN KEY (location_id) REFERENCES location (location_id)",
                columns: vec![
                    col("patient_identifier_id", "integer", OtherId, seq()),
                    col(
                        "patient_id",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((r.below(200) + 1).to_string())),
                    ),
                    col("identifier", "varchar(50)", Mrn, g(openmrs_id)),
                    col("identifier_type", "integer", Safe, one_of(&["1", "2", "3"])),
                    col("preferred", "boolean", Safe, one_of(&["true", "false"])),
                    col(
                        "location_id",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((r.below(OM_LOCATIONS) + 1).to_string())),
                    ),
                    col("date_created", "timestamp", Dates, om_created()),
                    col("uuid", "char(38)", OtherId, om_uuid("om-pid")),
                ],
            },
            Table {
                name: "encounter",
                rows: OM_ENCOUNTERS,
                constraints: leak(format!(
                    "PRIMARY KEY (encounter_id), UNIQUE (uuid), FOREIGN KEY (patient_id) REFERENCES patient (patient_id), \
                     FOREIGN KEY (location_id) REFERENCES location (location_id), {audit_fk}"
                )),
                columns: with(
                    vec![
                        col("encounter_id", "integer", OtherId, seq()),
                        col(
                            "encounter_type",
                            "integer",
                            Safe,
                            one_of(&["1", "2", "5", "7"]),
                        ),
                        col(
                            "patient_id",
                            "integer",
                            OtherId,
                            Box::new(|r, _| Some((r.below(200) + 1).to_string())),
                        ),
                        col(
                            "location_id",
                            "integer",
                            OtherId,
                            Box::new(|r, _| Some((r.below(OM_LOCATIONS) + 1).to_string())),
                        ),
                        col(
                            "form_id",
                            "integer",
                            Safe,
                            opt(0.3, |r| r.range(1, 12).to_string()),
                        ),
                        col("encounter_datetime", "timestamp", Dates, om_created()),
                        col("uuid", "char(38)", OtherId, om_uuid("om-encounter")),
                        col(
                            "visit_id",
                            "integer",
                            OtherId,
                            opt(0.2, |r| r.range(1, 500).to_string()),
                        ),
                    ],
                    audit(),
                ),
            },
            Table {
                name: "obs",
                rows: 2000,
                constraints: "PRIMARY KEY (obs_id), UNIQUE (uuid), FOREIGN KEY (person_id) REFERENCES person (person_id), \
                              FOREIGN KEY (encounter_id) REFERENCES encounter (encounter_id)",
                columns: vec![
                    col("obs_id", "integer", OtherId, seq()),
                    col(
                        "person_id",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((r.below(OM_PERSONS) + 1).to_string())),
                    ),
                    col(
                        "concept_id",
                        "integer",
                        Safe,
                        Box::new(|r, _| Some(r.range(5000, 165000).to_string())),
                    ),
                    col(
                        "encounter_id",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((r.below(OM_ENCOUNTERS) + 1).to_string())),
                    ),
                    col(
                        "order_id",
                        "integer",
                        OtherId,
                        opt(0.8, |r| r.range(1, 900).to_string()),
                    ),
                    col("obs_datetime", "timestamp", Dates, om_created()),
                    col(
                        "location_id",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((r.below(OM_LOCATIONS) + 1).to_string())),
                    ),
                    col(
                        "obs_group_id",
                        "integer",
                        OtherId,
                        opt(0.8, |r| r.range(1, 2000).to_string()),
                    ),
                    col(
                        "accession_number",
                        "varchar(255)",
                        OtherId,
                        opt(0.9, |r| format!("ACC{}", r.digits(7))),
                    ),
                    col(
                        "value_coded",
                        "integer",
                        Safe,
                        opt(0.6, |r| r.range(5000, 165000).to_string()),
                    ),
                    col(
                        "value_datetime",
                        "timestamp",
                        Dates,
                        opt(0.9, |r| {
                            format!(
                                "20{}-0{}-1{} 00:00:00",
                                r.range(10, 23),
                                r.range(1, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col(
                        "value_numeric",
                        "double precision",
                        Safe,
                        opt(0.4, |r| format!("{}.{}", r.range(0, 300), r.range(0, 9))),
                    ),
                    col("value_text", "text", Names, opt(0.8, note)),
                    col("comments", "varchar(255)", Names, opt(0.95, note)),
                    col("creator", "integer", OtherId, om_user()),
                    col("date_created", "timestamp", Dates, om_created()),
                    col("voided", "boolean", Safe, om_voided()),
                    col("uuid", "char(38)", OtherId, om_uuid("om-obs")),
                    col(
                        "status",
                        "varchar(16)",
                        Safe,
                        one_of(&["FINAL", "PRELIMINARY", "AMENDED"]),
                    ),
                    col(
                        "interpretation",
                        "varchar(32)",
                        Safe,
                        opt(0.8, |r| {
                            r.pick(&["NORMAL", "ABNORMAL", "CRITICALLY_HIGH"])
                                .to_owned()
                        }),
                    ),
                ],
            },
        ],
    }
}

const I2_PATIENTS: u64 = 250;
const I2_VISITS: u64 = 600;

fn i2_path(r: &mut Rng) -> String {
    format!(
        "\\i2b2\\Diagnoses\\{}\\",
        r.pick(&["Circulatory", "Respiratory", "Neoplasms"])
    )
}

/// i2b2's data repository (CRC) star schema: dimensions and the observation fact, whose primary
/// key has a timestamp among its seven parts; no foreign key is declared anywhere.
pub fn i2b2() -> Schema {
    use Class::*;
    Schema {
        name: "i2b2",
        shaped_after: "i2b2 CRC star schema (i2b2 data repository DDL)",
        held_out: true,
        preamble: "",
        tables: vec![
            Table {
                name: "patient_dimension",
                rows: I2_PATIENTS,
                constraints: "PRIMARY KEY (patient_num)",
                columns: vec![
                    col("patient_num", "integer", OtherId, key_int(1_000_000_001, 1)),
                    col(
                        "vital_status_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["N", "Y", "S"]),
                    ),
                    col("birth_date", "timestamp", Dates, datetime_in(1930, 2020)),
                    col(
                        "death_date",
                        "timestamp",
                        Dates,
                        opt(0.9, |r| {
                            format!(
                                "20{}-0{}-1{} 00:00:00",
                                r.range(10, 23),
                                r.range(1, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col("sex_cd", "varchar(50)", Safe, one_of(&["M", "F"])),
                    col("age_in_years_num", "integer", Dates, num(1, 95)),
                    col(
                        "language_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["english", "spanish"]),
                    ),
                    col(
                        "race_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["white", "black", "asian"]),
                    ),
                    col(
                        "marital_status_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["single", "married", "divorced"]),
                    ),
                    col(
                        "religion_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["protestant", "catholic", "none"]),
                    ),
                    col("zip_cd", "varchar(10)", Geography, g(zip5)),
                    col(
                        "statecityzip_path",
                        "varchar(700)",
                        Geography,
                        g(|r| {
                            format!(
                                "Zip codes\\Massachusetts\\{}\\{}\\",
                                r.pick(CITIES),
                                zip5(r)
                            )
                        }),
                    ),
                    col(
                        "income_cd",
                        "varchar(50)",
                        Safe,
                        opt(0.6, |r| r.pick(&["Low", "Medium", "High"]).to_owned()),
                    ),
                    col("patient_blob", "text", Names, opt(0.9, note)),
                    col("update_date", "timestamp", Dates, datetime_in(2018, 2024)),
                    col("download_date", "timestamp", Safe, datetime_in(2024, 2024)),
                    col("import_date", "timestamp", Safe, datetime_in(2024, 2024)),
                    col(
                        "sourcesystem_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["EPIC", "DEMO"]),
                    ),
                    col("upload_id", "integer", Safe, one_of(&["1", "2"])),
                ],
            },
            Table {
                name: "patient_mapping",
                rows: I2_PATIENTS,
                constraints: "PRIMARY KEY (patient_ide, patient_ide_source, project_id)",
                columns: vec![
                    col("patient_ide", "varchar(200)", Mrn, key_text("i2-mrn", mrn)),
                    col(
                        "patient_ide_source",
                        "varchar(50)",
                        Safe,
                        one_of(&["EPIC", "HIVE"]),
                    ),
                    col("patient_num", "integer", OtherId, key_int(1_000_000_001, 1)),
                    col(
                        "patient_ide_status",
                        "varchar(50)",
                        Safe,
                        one_of(&["A", "I"]),
                    ),
                    col("project_id", "varchar(50)", Safe, one_of(&["DEMO"])),
                    col("upload_date", "timestamp", Safe, datetime_in(2024, 2024)),
                    col("update_date", "timestamp", Dates, datetime_in(2018, 2024)),
                    col("sourcesystem_cd", "varchar(50)", Safe, one_of(&["EPIC"])),
                    col("upload_id", "integer", Safe, one_of(&["1"])),
                ],
            },
            Table {
                name: "visit_dimension",
                rows: I2_VISITS,
                constraints: "PRIMARY KEY (encounter_num, patient_num)",
                columns: vec![
                    col("encounter_num", "integer", OtherId, key_int(475_000_001, 1)),
                    col(
                        "patient_num",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((1_000_000_001 + r.below(I2_PATIENTS)).to_string())),
                    ),
                    col("active_status_cd", "varchar(50)", Safe, one_of(&["F", "A"])),
                    col("start_date", "timestamp", Dates, datetime_in(2010, 2023)),
                    col("end_date", "timestamp", Dates, datetime_in(2010, 2023)),
                    col("inout_cd", "varchar(50)", Safe, one_of(&["I", "O", "E"])),
                    col(
                        "location_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["CLINIC A", "WARD 3", "ED"]),
                    ),
                    col(
                        "location_path",
                        "varchar(900)",
                        Safe,
                        one_of(&["\\Hospital\\Clinic A\\", "\\Hospital\\Ward 3\\"]),
                    ),
                    col("length_of_stay", "integer", Safe, num(0, 30)),
                    col("visit_blob", "text", Names, opt(0.9, note)),
                    col("update_date", "timestamp", Dates, datetime_in(2018, 2024)),
                    col("sourcesystem_cd", "varchar(50)", Safe, one_of(&["EPIC"])),
                    col("upload_id", "integer", Safe, one_of(&["1"])),
                ],
            },
            Table {
                name: "provider_dimension",
                rows: 40,
                constraints: "PRIMARY KEY (provider_path, provider_id)",
                columns: vec![
                    col(
                        "provider_id",
                        "varchar(50)",
                        OtherId,
                        key_text("i2-prov", |r| format!("LCS-I2B2:D{}", r.digits(6))),
                    ),
                    col(
                        "provider_path",
                        "varchar(700)",
                        Safe,
                        one_of(&[
                            "\\i2b2\\Providers\\Internal Medicine\\",
                            "\\i2b2\\Providers\\Surgery\\",
                        ]),
                    ),
                    col("name_char", "varchar(850)", Names, g(full_name)),
                    col("provider_blob", "text", Safe, Box::new(|_, _| None)),
                    col("update_date", "timestamp", Dates, datetime_in(2018, 2024)),
                    col("sourcesystem_cd", "varchar(50)", Safe, one_of(&["EPIC"])),
                ],
            },
            Table {
                name: "concept_dimension",
                rows: 80,
                constraints: "PRIMARY KEY (concept_path)",
                columns: vec![
                    col(
                        "concept_path",
                        "varchar(700)",
                        Safe,
                        Box::new(|_, i| Some(format!("\\i2b2\\Concepts\\C{i:05}\\"))),
                    ),
                    col(
                        "concept_cd",
                        "varchar(50)",
                        Safe,
                        Box::new(|_, i| Some(format!("ICD10:C{:02}.{}", i % 99, i % 9))),
                    ),
                    col(
                        "name_char",
                        "varchar(2000)",
                        Safe,
                        one_of(&["Essential hypertension", "Asthma", "Type 2 diabetes"]),
                    ),
                    col("concept_blob", "text", Safe, Box::new(|_, _| None)),
                    col("update_date", "timestamp", Safe, datetime_in(2018, 2024)),
                    col("sourcesystem_cd", "varchar(50)", Safe, one_of(&["ICD10"])),
                ],
            },
            Table {
                name: "observation_fact",
                rows: 2000,
                constraints: "PRIMARY KEY (patient_num, concept_cd, modifier_cd, start_date, encounter_num, instance_num, provider_id)",
                columns: vec![
                    col(
                        "encounter_num",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((475_000_001 + r.below(I2_VISITS)).to_string())),
                    ),
                    col(
                        "patient_num",
                        "integer",
                        OtherId,
                        Box::new(|r, _| Some((1_000_000_001 + r.below(I2_PATIENTS)).to_string())),
                    ),
                    col(
                        "concept_cd",
                        "varchar(50)",
                        Safe,
                        Box::new(|r, _| {
                            Some(format!("ICD10:C{:02}.{}", r.below(80) % 99, r.below(9)))
                        }),
                    ),
                    col(
                        "provider_id",
                        "varchar(50)",
                        OtherId,
                        ref_text("i2-prov", 40, |r| format!("LCS-I2B2:D{}", r.digits(6))),
                    ),
                    col("start_date", "timestamp", Dates, datetime_in(2010, 2023)),
                    col(
                        "modifier_cd",
                        "varchar(100)",
                        Safe,
                        one_of(&["@", "MED:DOSE", "MED:FREQ"]),
                    ),
                    col("instance_num", "integer", Safe, num(1, 3)),
                    col("valtype_cd", "varchar(50)", Safe, one_of(&["N", "T", "@"])),
                    col("tval_char", "varchar(255)", Safe, one_of(&["E", "L", "G"])),
                    col("nval_num", "decimal(18,5)", Safe, decimal(0, 400, 2)),
                    col(
                        "valueflag_cd",
                        "varchar(50)",
                        Safe,
                        opt(0.7, |r| r.pick(&["H", "L", "A"]).to_owned()),
                    ),
                    col("quantity_num", "decimal(18,5)", Safe, decimal(1, 10, 0)),
                    col(
                        "units_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["mg", "mmHg", "kg"]),
                    ),
                    col(
                        "end_date",
                        "timestamp",
                        Dates,
                        opt(0.5, |r| {
                            format!(
                                "20{}-0{}-1{} 00:00:00",
                                r.range(10, 23),
                                r.range(1, 9),
                                r.range(0, 9)
                            )
                        }),
                    ),
                    col(
                        "location_cd",
                        "varchar(50)",
                        Safe,
                        one_of(&["CLINIC A", "WARD 3", "@"]),
                    ),
                    col("observation_blob", "text", Names, opt(0.9, note)),
                    col(
                        "confidence_num",
                        "decimal(18,5)",
                        Safe,
                        opt(0.9, |_| "1".to_owned()),
                    ),
                    col("update_date", "timestamp", Dates, datetime_in(2018, 2024)),
                    col("sourcesystem_cd", "varchar(50)", Safe, one_of(&["EPIC"])),
                    col("upload_id", "integer", Safe, one_of(&["1"])),
                ],
            },
        ],
    }
}

/// Every schema taken from real systems' DDL (tuning ones, then held out).
pub fn all_real() -> Vec<Schema> {
    vec![omop(), mimic(), openmrs(), i2b2()]
}
