//! Fake patient data with a realistic shape, made by the project (no real patient data
//! anywhere): providers with Luhn-valid NPIs, patients with names in Latin, Japanese, Cyrillic,
//! Arabic, Greek, Korean and Chinese scripts, SSN-shaped numbers, MRNs, phones, e-mails,
//! addresses (some in restricted ZIP3 areas), birth dates; encounters, observations and
//! medications linked by foreign keys; and a live workload of inserts, updates and deletes.
//! Deterministic for a given seed.

use tokio_postgres::Client;

/// SplitMix64: small, fast, deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.range(0, xs.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

const SCRIPTS: &[(&[&str], &[&str])] = &[
    (
        &[
            "James", "Mary", "José", "Zoë", "Olivia", "Liam", "Amélie", "Søren", "Noah", "Emma",
            "Siobhán", "Łukasz",
        ],
        &[
            "Smith",
            "García",
            "Müller",
            "O'Brien",
            "Nguyen",
            "Kowalski",
            "Johnson",
            "Rossi",
            "Dubois",
            "Fernández",
        ],
    ),
    (
        &[
            "太郎",
            "花子",
            "翔太",
            "さくら",
            "健一",
            "美咲",
            "ユウキ",
            "陽菜",
        ],
        &[
            "山田", "佐藤", "鈴木", "高橋", "田中", "渡辺", "伊藤", "中村",
        ],
    ),
    (
        &["Иван", "Анна", "Дмитрий", "Ольга", "Сергей", "Мария"],
        &["Иванов", "Петрова", "Смирнов", "Кузнецова", "Попов"],
    ),
    (
        &["محمد", "فاطمة", "أحمد", "ليلى"],
        &["الحسن", "خليل", "منصور", "حداد"],
    ),
    (
        &["Γιώργος", "Μαρία", "Νίκος", "Ελένη"],
        &["Παπαδόπουλος", "Νικολάου", "Γεωργίου"],
    ),
    (&["민준", "서연", "지호", "하은"], &["김", "이", "박", "최"]),
    (&["伟", "芳", "娜", "强"], &["王", "李", "张", "刘"]),
];

const STREETS: &[&str] = &[
    "Maple",
    "Oak",
    "Main",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Sunset",
    "Park",
];
const SUFFIXES: &[&str] = &["St", "Ave", "Rd", "Blvd", "Ln"];
const CITIES: &[(&str, &str)] = &[
    ("Boston", "021"),
    ("Cambridge", "021"),
    ("Denver", "802"),
    ("Austin", "787"),
    ("Seattle", "981"),
    ("Portland", "972"),
    ("Montpelier", "056"),
    ("Colebrook", "036"), // restricted ZIP3 (Safe Harbor → 000)
    ("Bismarck", "585"),
    ("Chicago", "606"),
];
const SPECIALTIES: &[&str] = &[
    "cardiology",
    "oncology",
    "pediatrics",
    "family medicine",
    "neurology",
    "dermatology",
];
const CODES: &[(&str, &str)] = &[
    ("8480-6", "mm[Hg]"),
    ("8462-4", "mm[Hg]"),
    ("8867-4", "/min"),
    ("29463-7", "kg"),
    ("2339-0", "mg/dL"),
    ("8310-5", "Cel"),
];
const DRUGS: &[&str] = &[
    "metformin",
    "lisinopril",
    "atorvastatin",
    "amoxicillin",
    "levothyroxine",
    "albuterol",
];
const KINDS: &[&str] = &["inpatient", "outpatient", "emergency", "telehealth"];

/// The demo schema (production side).
pub const SCHEMA_SQL: &str = "
CREATE TYPE encounter_kind AS ENUM ('inpatient', 'outpatient', 'emergency', 'telehealth');
CREATE TABLE providers (
    id bigserial PRIMARY KEY,
    npi text NOT NULL UNIQUE,
    name text NOT NULL,
    specialty text NOT NULL
);
CREATE TABLE patients (
    id bigserial PRIMARY KEY,
    mrn text NOT NULL UNIQUE,
    ssn text UNIQUE,
    given_name text NOT NULL,
    family_name text NOT NULL,
    birth_date date NOT NULL,
    phone text,
    email text,
    street text,
    city text,
    zip text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE encounters (
    id bigserial PRIMARY KEY,
    patient_id bigint NOT NULL REFERENCES patients (id),
    provider_id bigint NOT NULL REFERENCES providers (id),
    kind encounter_kind NOT NULL,
    started_at timestamptz NOT NULL,
    notes text
);
CREATE TABLE observations (
    id bigserial PRIMARY KEY,
    encounter_id bigint NOT NULL REFERENCES encounters (id),
    patient_id bigint NOT NULL REFERENCES patients (id),
    code text NOT NULL,
    value numeric(10, 2),
    unit text,
    observed_at timestamptz NOT NULL
);
-- The observation's subject, filled from its encounter (as FHIR's Observation.subject).
CREATE FUNCTION observation_subject() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  IF NEW.patient_id IS NULL THEN
    SELECT patient_id INTO NEW.patient_id FROM encounters WHERE id = NEW.encounter_id;
  END IF;
  RETURN NEW;
END $f$;
CREATE TRIGGER observation_subject BEFORE INSERT ON observations
  FOR EACH ROW EXECUTE FUNCTION observation_subject();
CREATE TABLE medications (
    id bigserial PRIMARY KEY,
    patient_id bigint NOT NULL REFERENCES patients (id),
    encounter_id bigint REFERENCES encounters (id),
    drug text NOT NULL,
    dose text,
    started_on date,
    tags text[]
);
";

#[derive(Clone, Debug)]
pub struct Patient {
    pub mrn: String,
    pub ssn: String,
    pub given: String,
    pub family: String,
    pub birth_date: String,
    pub phone: String,
    pub email: String,
    pub street: String,
    pub city: String,
    pub zip: String,
}

/// Luhn check digit of a digit string.
pub fn luhn_check_digit(digits: &str) -> u32 {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
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

/// A Luhn-valid NPI (check digit computed over the `80840` prefix).
pub fn npi(rng: &mut Rng) -> String {
    let body = format!("{}{:08}", rng.range(1, 3), rng.range(0, 100_000_000));
    let check = luhn_check_digit(&format!("80840{body}"));
    format!("{body}{check}")
}

impl Patient {
    /// Patient number `i` (unique MRN and SSN per `i`).
    pub fn generate(rng: &mut Rng, i: u64) -> Self {
        let (givens, families) = *rng.pick(SCRIPTS);
        let given = rng.pick(givens).to_string();
        let family = rng.pick(families).to_string();
        // SSN-shaped, unique per i: area 001-665 or 667-899, group 01-99, serial from i.
        let mut area = 1 + (i * 7 + rng.range(0, 7)) % 898;
        if area >= 666 {
            area += 1;
        }
        let ssn = format!("{:03}-{:02}-{:04}", area, 1 + (i / 9000) % 99, 1 + i % 9000);
        let (city, zip3) = *rng.pick(CITIES);
        Patient {
            mrn: format!("MRN{:08}", 10_000_000 + i * 13),
            ssn,
            birth_date: format!(
                "{}-{:02}-{:02}",
                rng.range(1930, 2021),
                rng.range(1, 13),
                rng.range(1, 29)
            ),
            phone: format!(
                "({}) {}-{:04}",
                rng.range(201, 990),
                rng.range(200, 1000),
                rng.range(0, 10000)
            ),
            email: format!("patient{}.{}@mail.example", i, rng.range(10, 99)),
            street: format!(
                "{} {} {}",
                rng.range(1, 9999),
                rng.pick(STREETS),
                rng.pick(SUFFIXES)
            ),
            city: city.to_owned(),
            zip: format!("{}{:02}", zip3, rng.range(1, 99)),
            given,
            family,
        }
    }
}

/// Creates the demo schema and loads `patients` patients with their history.
pub async fn load(
    client: &Client,
    patients: usize,
    seed: u64,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_SQL).await?;
    let mut rng = Rng::new(seed);
    // Providers.
    let nprov = (patients / 20).max(5);
    let mut cols: [Vec<String>; 3] = Default::default();
    for _ in 0..nprov {
        let (givens, families) = *rng.pick(SCRIPTS);
        cols[0].push(npi(&mut rng));
        cols[1].push(format!("{} {}", rng.pick(givens), rng.pick(families)));
        cols[2].push(rng.pick(SPECIALTIES).to_string());
    }
    client
        .execute(
            "INSERT INTO providers (npi, name, specialty) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
            &[&cols[0], &cols[1], &cols[2]],
        )
        .await?;
    // Patients in chunks.
    for chunk_start in (0..patients).step_by(2000) {
        let end = (chunk_start + 2000).min(patients);
        let mut c: [Vec<String>; 10] = Default::default();
        for i in chunk_start..end {
            let p = Patient::generate(&mut rng, i as u64);
            for (k, v) in [
                p.mrn,
                p.ssn,
                p.given,
                p.family,
                p.birth_date,
                p.phone,
                p.email,
                p.street,
                p.city,
                p.zip,
            ]
            .into_iter()
            .enumerate()
            {
                c[k].push(v);
            }
        }
        client
            .execute(
                "INSERT INTO patients (mrn, ssn, given_name, family_name, birth_date, phone, email, street, city, zip) \
                 SELECT a, b, c, d, e::date, f, g, h, i, j FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) AS u(a, b, c, d, e, f, g, h, i, j)",
                &[&c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7], &c[8], &c[9]],
            )
            .await?;
    }
    // Encounters, observations, medications: generated in SQL from the seed rows.
    client
        .batch_execute(&format!(
            "SELECT setseed({seed_f});
             INSERT INTO encounters (patient_id, provider_id, kind, started_at, notes)
               SELECT p.id, 1 + floor(random() * {nprov})::bigint,
                      (ARRAY['inpatient','outpatient','emergency','telehealth'])[1 + floor(random() * 4)::int]::encounter_kind,
                      timestamptz '2024-01-01' + random() * interval '700 days',
                      'seen for follow-up; patient ' || p.family_name || ' reports improvement 😀'
               FROM patients p, generate_series(1, 1 + (p.id % 4)::int);
             INSERT INTO observations (encounter_id, code, value, unit, observed_at)
               SELECT e.id, c.code, round((random() * 150)::numeric, 2), c.unit, e.started_at + interval '10 minutes'
               FROM encounters e CROSS JOIN LATERAL (SELECT * FROM (VALUES {codes}) v(code, unit)
                    ORDER BY random() LIMIT 2 + (e.id % 3)::int) c;
             INSERT INTO medications (patient_id, encounter_id, drug, dose, started_on, tags)
               SELECT e.patient_id, e.id, (ARRAY[{drugs}])[1 + floor(random() * {ndrugs})::int],
                      (10 * (1 + floor(random() * 10)))::text || ' mg', e.started_at::date, ARRAY['chronic', 'oral']
               FROM encounters e WHERE e.id % 3 = 0;",
            seed_f = (seed % 1000) as f64 / 1000.0,
            codes = CODES
                .iter()
                .map(|(c, u)| format!("('{c}', '{u}')"))
                .collect::<Vec<_>>()
                .join(", "),
            drugs = DRUGS.iter().map(|d| format!("'{d}'")).collect::<Vec<_>>().join(", "),
            ndrugs = DRUGS.len(),
        ))
        .await?;
    Ok(())
}

/// One transaction of the live workload. Returns a short name of what it did.
pub async fn workload_step(
    client: &mut Client,
    rng: &mut Rng,
    next_patient: &mut u64,
) -> Result<&'static str, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let kind = rng.range(0, 100);
    let what = if kind < 30 {
        let p = Patient::generate(rng, *next_patient);
        *next_patient += 1;
        let id: i64 = tx
            .query_one(
                "INSERT INTO patients (mrn, ssn, given_name, family_name, birth_date, phone, email, street, city, zip) \
                 VALUES ($1, $2, $3, $4, $5::text::date, $6, $7, $8, $9, $10) RETURNING id",
                &[&p.mrn, &p.ssn, &p.given, &p.family, &p.birth_date, &p.phone, &p.email, &p.street, &p.city, &p.zip],
            )
            .await?
            .get(0);
        let kind = rng.pick(KINDS).to_string();
        let enc: i64 = tx
            .query_one(
                "INSERT INTO encounters (patient_id, provider_id, kind, started_at, notes) \
                 SELECT $1, (SELECT id FROM providers ORDER BY random() LIMIT 1), $2::text::encounter_kind, now(), 'intake' \
                 RETURNING id",
                &[&id, &kind],
            )
            .await?
            .get(0);
        let (code, unit) = *rng.pick(CODES);
        tx.execute(
            "INSERT INTO observations (encounter_id, code, value, unit, observed_at) VALUES ($1, $2, random() * 100, $3, now())",
            &[&enc, &code, &unit],
        )
        .await?;
        "new patient"
    } else if kind < 55 {
        let kind = rng.pick(KINDS).to_string();
        let n = rng.range(1, 5) as i64;
        tx.execute(
            "WITH e AS (INSERT INTO encounters (patient_id, provider_id, kind, started_at) \
               SELECT (SELECT id FROM patients ORDER BY random() LIMIT 1), (SELECT id FROM providers ORDER BY random() LIMIT 1), \
                      $1::text::encounter_kind, now() RETURNING id) \
             INSERT INTO observations (encounter_id, code, value, unit, observed_at) \
               SELECT e.id, '8867-4', round((60 + random() * 40)::numeric, 2), '/min', now() FROM e, generate_series(1, $2::bigint)",
            &[&kind, &n],
        )
        .await?;
        "new encounter"
    } else if kind < 75 {
        let phone = format!(
            "({}) {}-{:04}",
            rng.range(201, 990),
            rng.range(200, 1000),
            rng.range(0, 10000)
        );
        tx.execute(
            "UPDATE patients SET phone = $1, street = street || ' Apt ' || (1 + floor(random() * 30))::int \
             WHERE id = (SELECT id FROM patients ORDER BY random() LIMIT 1)",
            &[&phone],
        )
        .await?;
        "update patient"
    } else if kind < 88 {
        tx.execute(
            "UPDATE observations SET value = round((random() * 150)::numeric, 2) \
             WHERE id IN (SELECT id FROM observations ORDER BY random() LIMIT 3)",
            &[],
        )
        .await?;
        "update observations"
    } else if kind < 94 {
        tx.execute(
            "DELETE FROM medications WHERE id = (SELECT id FROM medications ORDER BY random() LIMIT 1)",
            &[],
        )
        .await?;
        "delete medication"
    } else {
        let drug = rng.pick(DRUGS).to_string();
        tx.execute(
            "INSERT INTO medications (patient_id, drug, dose, started_on, tags) \
             SELECT id, $1, '5 mg', current_date, ARRAY['new'] FROM patients ORDER BY random() LIMIT 1",
            &[&drug],
        )
        .await?;
        "new medication"
    };
    tx.commit().await?;
    Ok(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_is_luhn_valid_and_patients_unique() {
        let mut r = Rng::new(1);
        for _ in 0..100 {
            let n = npi(&mut r);
            assert_eq!(n.len(), 10);
            let full = format!("80840{n}");
            let (body, check) = full.split_at(full.len() - 1);
            assert_eq!(luhn_check_digit(body).to_string(), check);
        }
        let mut ssns = std::collections::HashSet::new();
        for i in 0..20_000 {
            let p = Patient::generate(&mut r, i);
            assert!(ssns.insert(p.ssn.clone()), "duplicate ssn at {i}");
            assert!(
                !p.ssn.starts_with("666") && !p.ssn.starts_with("000") && !p.ssn.starts_with('9')
            );
        }
    }
}
