//! The classification registry: versioned, reviewable TOML files in `schema-registry/`, one
//! file per table, naming for every column its type and its class — `safe`, `sensitive` with a
//! rule, or `blocked`. Loaded and validated here; errors name the file, the table, the column
//! and the problem (with TOML line and column for syntax errors). The registry version is a
//! content hash of all files, carried by every published event.
//!
//! ```toml
//! table = "public.patients"
//! # blocked = true            # drop the whole table's changes
//! profile = "expert_determination"
//! [columns]
//! id   = { type = "bigint", class = "sensitive", rule = "tokenize", domain = "patient_id" }
//! name = { type = "text",   class = "sensitive", rule = "tokenize", domain = "person_name" }
//! note = { type = "text",   class = "blocked", reviewer = "kim", reason = "free text" }
//! created_at = { type = "timestamp with time zone", class = "safe" }
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("registry file {path}: table {table}, column {column}: {message}")]
    Column {
        path: PathBuf,
        table: String,
        column: String,
        message: String,
    },
    #[error("registry file {path}: {message}")]
    Table { path: PathBuf, message: String },
}

/// The de-identification standard a column is held to (45 CFR 164.514).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// 164.514(b)(2): identifiers replaced by tokens not derived from the value (random,
    /// remembered by the vault), dates reduced to the year, ZIP3, ages over 89 → 90.
    SafeHarbor,
    /// 164.514(b)(1): keyed deterministic tokens and per-entity date shift, on an expert's
    /// sign-off.
    ExpertDetermination,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::SafeHarbor => "safe_harbor",
            Profile::ExpertDetermination => "expert_determination",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "safe_harbor" => Some(Profile::SafeHarbor),
            "expert_determination" => Some(Profile::ExpertDetermination),
            _ => None,
        }
    }
}

/// Which bundled list a surrogate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SurrogateKind {
    /// A full person name (given names, then the family name; family first in CJK).
    Name,
    GivenName,
    FamilyName,
    Street,
    City,
}

impl SurrogateKind {
    pub fn name(self) -> &'static str {
        match self {
            SurrogateKind::Name => "name",
            SurrogateKind::GivenName => "given_name",
            SurrogateKind::FamilyName => "family_name",
            SurrogateKind::Street => "street",
            SurrogateKind::City => "city",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [
            SurrogateKind::Name,
            SurrogateKind::GivenName,
            SurrogateKind::FamilyName,
            SurrogateKind::Street,
            SurrogateKind::City,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// What happens to a column's values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Safe: published as is.
    Keep,
    /// Identifier token of the column's type; columns sharing a domain join.
    Tokenize { domain: String },
    /// SSN token in a never-issued area (000, 666, 9xx).
    Ssn { domain: String },
    /// E-mail token `local@example.com`.
    Email { domain: String },
    /// Surrogate from the bundled lists of the value's script.
    Surrogate { domain: String, kind: SurrogateKind },
    /// Dates (and timestamps) of a key: each whole key tuple — the date with the `with` columns'
    /// values — gets a vault-allocated date in the same year (a random one under Safe Harbor),
    /// unique among the tuples that share the `with` values, so the key stays unique and a
    /// foreign key naming the same tuple gets the same date. No date element but the year comes
    /// from the value.
    DateToken { domain: String, with: Vec<String> },
    /// Dates moved by the keyed offset of the row's entity (the value of column `entity` in
    /// token domain `domain`), within ±`max_days`. Expert determination only.
    DateShift {
        domain: String,
        entity: String,
        max_days: u32,
    },
    /// Replaced by NULL, or by a constant when given.
    Scrub { replacement: Option<String> },
    /// Dates and timestamps reduced to January 1st of their year.
    YearOnly,
    /// ZIP codes reduced to their first three digits (`000` for restricted prefixes).
    Zip3,
    /// Ages over 89 become 90.
    AgeCap,
    /// Free text: scanner spans replaced by typed placeholders, or the whole value.
    Redact { whole: bool },
    /// Rules for paths inside JSON; other leaves kept or nulled. Object keys that no path
    /// names literally are replaced by tokens (domain [`json_key_domain`]) unless `keep_keys`:
    /// keys can be data (`{"Jane Doe": {...}}`).
    Json {
        paths: Vec<(String, Rule)>,
        keep_others: bool,
        keep_keys: bool,
    },
}

impl Rule {
    /// A short PHI-free name for schema events and audit records.
    pub fn describe(&self) -> String {
        match self {
            Rule::Keep => "keep".into(),
            Rule::Tokenize { domain } => format!("tokenize({domain})"),
            Rule::DateToken { domain, with } if with.is_empty() => {
                format!("date_token({domain})")
            }
            Rule::DateToken { domain, with } => {
                format!("date_token({domain} per {})", with.join(", "))
            }
            Rule::Ssn { domain } => format!("ssn({domain})"),
            Rule::Email { domain } => format!("email({domain})"),
            Rule::Surrogate { domain, kind } => format!("surrogate({domain}, {})", kind.name()),
            Rule::DateShift {
                domain,
                entity,
                max_days,
            } => format!("date_shift({domain} by {entity}, ±{max_days}d)"),
            Rule::Scrub { replacement: None } => "scrub(null)".into(),
            Rule::Scrub {
                replacement: Some(_),
            } => "scrub(constant)".into(),
            Rule::YearOnly => "year_only".into(),
            Rule::Zip3 => "zip3".into(),
            Rule::AgeCap => "age_cap".into(),
            Rule::Redact { whole: false } => "redact(spans)".into(),
            Rule::Redact { whole: true } => "redact(whole)".into(),
            Rule::Json {
                paths,
                keep_others,
                keep_keys,
            } => format!(
                "json({}; others {}; keys {})",
                paths
                    .iter()
                    .map(|(p, r)| format!("{p}: {}", r.describe()))
                    .collect::<Vec<_>>()
                    .join(", "),
                if *keep_others { "kept" } else { "null" },
                if *keep_keys { "kept" } else { "tokenized" }
            ),
        }
    }

    /// The token domain the rule writes into, if any (`date_shift` reads an entity's domain but
    /// makes no tokens).
    pub fn domain(&self) -> Option<&str> {
        match self {
            Rule::Tokenize { domain }
            | Rule::DateToken { domain, .. }
            | Rule::Ssn { domain }
            | Rule::Email { domain }
            | Rule::Surrogate { domain, .. } => Some(domain),
            _ => None,
        }
    }

    /// The token domain and the token's form, for the one-form-per-domain check.
    fn domain_form(&self, type_name: &str, profile: Profile) -> Option<(String, String)> {
        let p = profile.name();
        match self {
            Rule::Tokenize { domain } => {
                Some((domain.clone(), format!("tokenize {type_name} {p}")))
            }
            Rule::DateToken { domain, with } => Some((
                domain.clone(),
                format!("date_token {type_name} {p} with {}", with.len()),
            )),
            Rule::Ssn { domain } => Some((domain.clone(), format!("ssn {p}"))),
            Rule::Email { domain } => Some((domain.clone(), format!("email {p}"))),
            Rule::Surrogate { domain, kind } => {
                Some((domain.clone(), format!("surrogate {} {p}", kind.name())))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Publish(Rule),
    Blocked,
}

#[derive(Debug, Clone)]
pub struct ColumnEntry {
    /// The column's type as `format_type` spells it with an empty search_path.
    pub type_name: String,
    pub decision: Decision,
    /// The column's profile (its own, else the table's).
    pub profile: Profile,
    pub reviewer: Option<String>,
    pub reason: Option<String>,
    pub reviewed_at: Option<String>,
    /// The in-flight scanner looks at this column's published values (default true for safe
    /// text; `scan = false` records a reviewed false positive).
    pub scan: bool,
    /// The table (oid) and column (attnum) the decision was made for, written by `approve`:
    /// a renamed, swapped or re-created table or column holds as new instead of inheriting the
    /// decision. `None` in lines written by hand or by versions before binding (bound by name,
    /// held when the shape log shows the name meant something else before).
    pub relid: Option<u32>,
    pub attnum: Option<i16>,
}

#[derive(Debug, Clone)]
pub struct TableEntry {
    pub file: PathBuf,
    pub blocked: bool,
    pub profile: Profile,
    pub reviewer: Option<String>,
    pub reason: Option<String>,
    pub reviewed_at: Option<String>,
    pub columns: BTreeMap<String, ColumnEntry>,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Content hash of all registry files (hex, 16 characters).
    pub version: String,
    /// Three-digit ZIP prefixes the `zip3` rule maps to `000`: `restricted_zip3.txt` in the
    /// registry directory (one prefix per line, `#` comments), else the 17 prefixes of the HHS
    /// guidance.
    pub restricted_zip3: std::sync::Arc<Vec<String>>,
    /// Keyed by qualified name `schema.table`.
    pub tables: BTreeMap<String, TableEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    table: String,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    reviewer: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reviewed_at: Option<String>,
    #[serde(default)]
    columns: BTreeMap<String, ColumnFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnFile {
    #[serde(rename = "type")]
    type_name: String,
    class: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    max_days: Option<u32>,
    #[serde(default)]
    with: Option<Vec<String>>,
    #[serde(default)]
    replacement: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    paths: Vec<PathFile>,
    #[serde(default)]
    others: Option<String>,
    #[serde(default)]
    keys: Option<String>,
    #[serde(default)]
    reviewer: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reviewed_at: Option<String>,
    #[serde(default)]
    scan: Option<bool>,
    #[serde(default)]
    relid: Option<u32>,
    #[serde(default)]
    attnum: Option<i16>,
}

/// The fields that spell a rule (a column's, or one JSON path's).
#[derive(Default)]
struct RuleFields {
    rule: Option<String>,
    domain: Option<String>,
    kind: Option<String>,
    entity: Option<String>,
    max_days: Option<u32>,
    with: Option<Vec<String>>,
    replacement: Option<String>,
    mode: Option<String>,
    paths: Vec<PathFile>,
    others: Option<String>,
    keys: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathFile {
    path: String,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    max_days: Option<u32>,
    #[serde(default)]
    replacement: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

const RULES: &str = "tokenize, date_token, ssn, email, surrogate, date_shift, scrub, year_only, zip3, age_cap, redact or json";

/// The token domain of JSON object keys that no path names: one per profile, shared by every
/// column, so the same key gets the same token everywhere and documents keep a common shape.
pub fn json_key_domain(profile: Profile) -> &'static str {
    match profile {
        Profile::SafeHarbor => "json_key",
        Profile::ExpertDetermination => "json_key_expert",
    }
}

/// Parses one rule; `Err` is the problem (the caller names file, table and column).
fn parse_rule(f: &RuleFields, profile: Profile, nested: bool) -> Result<Rule, String> {
    let rule = f.rule.as_deref().ok_or("class sensitive needs a rule")?;
    let domain = || {
        f.domain
            .clone()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("rule {rule} needs a domain"))
    };
    let unused = |names: &[(&str, bool)]| -> Result<(), String> {
        match names.iter().find(|(_, set)| *set) {
            Some((n, _)) => Err(format!("rule {rule} takes no {n}")),
            None => Ok(()),
        }
    };
    if rule != "json" {
        unused(&[
            ("paths", !f.paths.is_empty()),
            ("others", f.others.is_some()),
            ("keys", f.keys.is_some()),
        ])?;
    }
    if rule != "date_shift" {
        unused(&[
            ("entity", f.entity.is_some()),
            ("max_days", f.max_days.is_some()),
        ])?;
    }
    if rule != "surrogate" {
        unused(&[("kind", f.kind.is_some())])?;
    }
    if rule != "date_token" {
        unused(&[("with", f.with.is_some())])?;
    }
    Ok(match rule {
        "tokenize" => Rule::Tokenize { domain: domain()? },
        "date_token" => {
            if nested {
                return Err(
                    "rule date_token is for date and timestamp columns of a key, not JSON paths"
                        .into(),
                );
            }
            Rule::DateToken {
                domain: domain()?,
                with: f.with.clone().unwrap_or_default(),
            }
        }
        "ssn" => Rule::Ssn { domain: domain()? },
        "email" => Rule::Email { domain: domain()? },
        "surrogate" => {
            let k = f.kind.as_deref().ok_or(
                "rule surrogate needs a kind (name, given_name, family_name, street or city)",
            )?;
            Rule::Surrogate {
                domain: domain()?,
                kind: SurrogateKind::parse(k).ok_or_else(|| {
                    format!(
                        "unknown surrogate kind {k:?} (expected name, given_name, family_name, street or city)"
                    )
                })?,
            }
        }
        "date_shift" => {
            if profile == Profile::SafeHarbor {
                return Err(
                    "rule date_shift needs profile expert_determination (Safe Harbor keeps only the year: use year_only)"
                        .into(),
                );
            }
            let max_days = f.max_days.unwrap_or(180);
            if !(1..=3650).contains(&max_days) {
                return Err(format!("max_days {max_days} must be between 1 and 3650"));
            }
            Rule::DateShift {
                domain: domain()?,
                entity: f
                    .entity
                    .clone()
                    .ok_or("rule date_shift needs an entity column (e.g. patient_id)")?,
                max_days,
            }
        }
        "scrub" => Rule::Scrub {
            replacement: f.replacement.clone(),
        },
        "year_only" => Rule::YearOnly,
        "zip3" => Rule::Zip3,
        "age_cap" => Rule::AgeCap,
        "redact" => Rule::Redact {
            whole: match f.mode.as_deref() {
                None | Some("spans") => false,
                Some("whole") => true,
                Some(m) => {
                    return Err(format!(
                        "unknown redact mode {m:?} (expected spans or whole)"
                    ));
                }
            },
        },
        "json" if nested => return Err("rule json cannot be nested inside a JSON path".into()),
        "json" => {
            let mut paths = Vec::new();
            for p in &f.paths {
                parse_path(&p.path)?;
                let fields = RuleFields {
                    rule: p.rule.clone(),
                    domain: p.domain.clone(),
                    kind: p.kind.clone(),
                    entity: p.entity.clone(),
                    max_days: p.max_days,
                    replacement: p.replacement.clone(),
                    mode: p.mode.clone(),
                    ..RuleFields::default()
                };
                let r = if fields.rule.as_deref() == Some("keep") {
                    Rule::Keep
                } else {
                    parse_rule(&fields, profile, true)
                        .map_err(|e| format!("JSON path {}: {e}", p.path))?
                };
                paths.push((p.path.clone(), r));
            }
            Rule::Json {
                paths,
                keep_others: match f.others.as_deref() {
                    None | Some("null") => false,
                    Some("keep") => true,
                    Some(o) => return Err(format!("unknown others {o:?} (expected null or keep)")),
                },
                keep_keys: match f.keys.as_deref() {
                    None | Some("tokenize") => false,
                    Some("keep") => true,
                    Some(k) => {
                        return Err(format!("unknown keys {k:?} (expected tokenize or keep)"));
                    }
                },
            }
        }
        "keep" => return Err("a sensitive column cannot use rule keep; classify it safe".into()),
        other => return Err(format!("unknown rule {other:?} (expected {RULES})")),
    })
}

/// The registry's lock is its directory itself (`flock` on the directory): a writer holds it
/// exclusively for a whole change (validated, then every file replaced), [`Registry::load`]
/// shares it — so a load never sees half of a change that spans files. No file is added.
pub fn lock_dir(dir: &Path, exclusive: bool) -> std::io::Result<std::fs::File> {
    let f = std::fs::File::open(dir)?;
    if exclusive {
        f.lock()?;
    } else {
        f.lock_shared()?;
    }
    Ok(f)
}

/// Files a registry writer has staged but not yet written: path → new text (`None`: removed).
pub type Staged = BTreeMap<PathBuf, Option<String>>;

/// Registry files already parsed, by path and a hash of their text: a writer that checks many
/// staged changes parses each text once.
pub type ParseCache = std::collections::HashMap<PathBuf, ([u8; 32], String, TableEntry)>;

impl Registry {
    /// Loads every `*.toml` file of `dir` (sorted by name), sharing the registry's lock with
    /// other loads (a writer holds it while it replaces files).
    pub fn load(dir: &Path) -> Result<Self, RegistryError> {
        let _shared = lock_dir(dir, false).map_err(|source| RegistryError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Self::load_staged(dir, &Staged::new())
    }

    /// The registry `dir` makes with `staged` files in place of (or besides) its own — what a
    /// writer validates before it writes anything. The caller holds the lock.
    pub fn load_staged(dir: &Path, staged: &Staged) -> Result<Self, RegistryError> {
        Self::load_cached(dir, staged, &mut ParseCache::new())
    }

    /// [`Registry::load_staged`] with a cache of parsed files.
    pub fn load_cached(
        dir: &Path,
        staged: &Staged,
        cache: &mut ParseCache,
    ) -> Result<Self, RegistryError> {
        let io = |source| RegistryError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter(|p| !staged.contains_key(p))
            .chain(
                staged
                    .iter()
                    .filter(|(_, t)| t.is_some())
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        files.sort();
        let mut hasher = blake3::Hasher::new();
        let mut reg = Registry::default();
        for path in files {
            let text = match staged.get(&path) {
                Some(Some(t)) => t.clone(),
                _ => std::fs::read_to_string(&path).map_err(|source| RegistryError::Io {
                    path: path.clone(),
                    source,
                })?,
            };
            hasher.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update(&[0]);
            hasher.update(text.as_bytes());
            hasher.update(&[0]);
            let digest = *blake3::hash(text.as_bytes()).as_bytes();
            let (name, entry) = match cache.get(&path) {
                Some((d, name, entry)) if *d == digest => (name.clone(), entry.clone()),
                _ => {
                    let (name, entry) = parse_table_file(&path, &text)?;
                    cache.insert(path.clone(), (digest, name.clone(), entry.clone()));
                    (name, entry)
                }
            };
            if let Some(prev) = reg.tables.get(&name) {
                return Err(RegistryError::Table {
                    path,
                    message: format!(
                        "table {name} is already classified in {}",
                        prev.file.display()
                    ),
                });
            }
            reg.tables.insert(name, entry);
        }
        reg.check_domains()?;
        let zip_path = dir.join("restricted_zip3.txt");
        reg.restricted_zip3 = std::sync::Arc::new(match std::fs::read_to_string(&zip_path) {
            Ok(text) => {
                hasher.update(b"restricted_zip3.txt\0");
                hasher.update(text.as_bytes());
                let mut out = Vec::new();
                let mut override_reason = None;
                for (i, line) in text.lines().enumerate() {
                    let l = line.split('#').next().unwrap_or("").trim();
                    if l.is_empty() {
                        continue;
                    }
                    if let Some(reason) = l.strip_prefix("override-hhs-prefixes:") {
                        override_reason = Some(reason.trim().to_owned());
                        continue;
                    }
                    if l.len() != 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(RegistryError::Table {
                            path: zip_path.clone(),
                            message: format!(
                                "line {}: {l:?} is not a three-digit ZIP prefix",
                                i + 1
                            ),
                        });
                    }
                    out.push(l.to_owned());
                }
                // An empty or shortened list would silently turn suppression off for the
                // prefixes HHS names: only an explicit, reasoned override may do that.
                let missing = RESTRICTED_ZIP3
                    .iter()
                    .filter(|p| !out.iter().any(|o| o == *p))
                    .count();
                match &override_reason {
                    Some(r) if r.is_empty() => {
                        return Err(RegistryError::Table {
                            path: zip_path.clone(),
                            message: "override-hhs-prefixes needs a reason after the colon".into(),
                        });
                    }
                    None if missing > 0 => {
                        return Err(RegistryError::Table {
                            path: zip_path.clone(),
                            message: format!(
                                "{missing} of the 17 prefixes HHS lists (populations of 20,000 \
                                 or fewer) are missing, which would publish them; add them, or \
                                 write a line `override-hhs-prefixes: <reason>` (e.g. newer \
                                 census figures)"
                            ),
                        });
                    }
                    _ => {}
                }
                out
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                RESTRICTED_ZIP3.iter().map(|s| s.to_string()).collect()
            }
            Err(source) => {
                return Err(RegistryError::Io {
                    path: zip_path,
                    source,
                });
            }
        });
        reg.version = hasher.finalize().to_hex()[..16].to_owned();
        Ok(reg)
    }

    /// Columns that share a token domain must make the same kind of token under the same
    /// profile, or the same value would get two tokens and joins would break.
    fn check_domains(&self) -> Result<(), RegistryError> {
        let mut seen: BTreeMap<String, (String, String, String, PathBuf)> = BTreeMap::new();
        for (table, t) in &self.tables {
            for (col, c) in &t.columns {
                let Decision::Publish(rule) = &c.decision else {
                    continue;
                };
                let mut forms = Vec::new();
                if let Rule::Json {
                    paths, keep_keys, ..
                } = rule
                {
                    for (_, r) in paths {
                        forms.extend(r.domain_form("json leaf", c.profile));
                    }
                    if !keep_keys {
                        forms.push((
                            json_key_domain(c.profile).to_owned(),
                            format!("json key {}", c.profile.name()),
                        ));
                    }
                } else {
                    forms.extend(rule.domain_form(&c.type_name, c.profile));
                }
                for (domain, form) in forms {
                    match seen.get(&domain) {
                        Some((t0, c0, f0, _)) if *f0 != form => {
                            return Err(RegistryError::Column {
                                path: t.file.clone(),
                                table: table.clone(),
                                column: col.clone(),
                                message: format!(
                                    "domain {domain} is used as \"{form}\" here but as \"{f0}\" by {t0}.{c0}; \
                                     columns sharing a domain need the same rule, type and profile"
                                ),
                            });
                        }
                        Some(_) => {}
                        None => {
                            seen.insert(domain, (table.clone(), col.clone(), form, t.file.clone()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn table(&self, qualified: &str) -> Option<&TableEntry> {
        self.tables.get(qualified)
    }
}

/// One registry file, parsed and checked on its own (the registry checks what spans files).
pub fn parse_table_file(path: &Path, text: &str) -> Result<(String, TableEntry), RegistryError> {
    let f: TableFile = toml::from_str(text).map_err(|e| RegistryError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let table_err = |message: String| RegistryError::Table {
        path: path.to_owned(),
        message,
    };
    if f.table.split('.').count() != 2 {
        return Err(table_err(format!(
            "table name {:?} must be qualified as schema.table",
            f.table
        )));
    }
    let profile = match f.profile.as_deref() {
        None => Profile::SafeHarbor,
        Some(p) => Profile::parse(p).ok_or_else(|| {
            table_err(format!(
                "unknown profile {p:?} (expected safe_harbor or expert_determination)"
            ))
        })?,
    };
    let mut columns = BTreeMap::new();
    for (col, c) in f.columns {
        // The line that names the column, for the error message.
        let line = text
            .lines()
            .position(|l| {
                let t = l.trim_start().trim_start_matches("[columns.");
                t.strip_prefix(col.as_str())
                    .or_else(|| t.strip_prefix(&format!("\"{col}\"")))
                    .is_some_and(|r| r.trim_start().starts_with('=') || r.starts_with(']'))
            })
            .map(|i| format!("line {}: ", i + 1))
            .unwrap_or_default();
        let col_err = |message: String| RegistryError::Column {
            path: path.to_owned(),
            table: f.table.clone(),
            column: col.clone(),
            message: format!("{line}{message}"),
        };
        let col_profile = match c.profile.as_deref() {
            None => profile,
            Some(p) => Profile::parse(p).ok_or_else(|| {
                col_err(format!(
                    "unknown profile {p:?} (expected safe_harbor or expert_determination)"
                ))
            })?,
        };
        let decision = match c.class.as_str() {
            "safe" => {
                if c.rule.as_deref().is_some_and(|r| r != "keep") {
                    return Err(col_err("class safe takes no rule other than keep".into()));
                }
                Decision::Publish(Rule::Keep)
            }
            "blocked" => Decision::Blocked,
            "sensitive" => {
                let fields = RuleFields {
                    rule: c.rule.clone(),
                    domain: c.domain.clone(),
                    kind: c.kind.clone(),
                    entity: c.entity.clone(),
                    max_days: c.max_days,
                    with: c.with.clone(),
                    replacement: c.replacement.clone(),
                    mode: c.mode.clone(),
                    paths: c.paths,
                    others: c.others.clone(),
                    keys: c.keys.clone(),
                };
                Decision::Publish(parse_rule(&fields, col_profile, false).map_err(col_err)?)
            }
            other => {
                return Err(col_err(format!(
                    "unknown class {other:?} (expected safe, sensitive or blocked)"
                )));
            }
        };
        columns.insert(
            col,
            ColumnEntry {
                type_name: c.type_name,
                decision,
                profile: col_profile,
                reviewer: c.reviewer,
                reason: c.reason,
                reviewed_at: c.reviewed_at,
                scan: c.scan.unwrap_or(true),
                relid: c.relid,
                attnum: c.attnum,
            },
        );
    }
    Ok((
        f.table,
        TableEntry {
            file: path.to_owned(),
            blocked: f.blocked,
            profile,
            reviewer: f.reviewer,
            reason: f.reason,
            reviewed_at: f.reviewed_at,
            columns,
        },
    ))
}

// ---- The rule language's data: restricted ZIP3 prefixes and JSON paths ----

/// Three-digit ZIP prefixes whose area has 20,000 people or fewer (HHS Safe Harbor guidance,
/// 2000 census), generalized to `000`.
pub const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    AnyKey,
    AnyIndex,
}

/// Parses `$.a.b[*].c` / `$.*` into segments.
pub fn parse_path(p: &str) -> Result<Vec<PathSeg>, String> {
    let rest = p
        .strip_prefix('$')
        .ok_or_else(|| format!("JSON path {p:?} must start with $"))?;
    let mut segs = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix("[*]") {
            segs.push(PathSeg::AnyIndex);
            s = r;
        } else if let Some(r) = s.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() {
                return Err(format!("JSON path {p:?} has an empty key"));
            }
            segs.push(if key == "*" {
                PathSeg::AnyKey
            } else {
                PathSeg::Key(key.to_owned())
            });
            s = &r[end..];
        } else {
            return Err(format!(
                "JSON path {p:?}: expected .key or [*] at {:?}",
                s.chars().take(10).collect::<String>()
            ));
        }
    }
    Ok(segs)
}

impl crate::error::Classify for RegistryError {
    /// Registry files are input a person writes: bad usage.
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn loads_and_hashes() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "public.t.toml",
            r#"table = "public.t"
[columns]
id = { type = "bigint", class = "sensitive", rule = "tokenize", domain = "t_id" }
x = { type = "text", class = "safe" }
y = { type = "text", class = "blocked" }
"#,
        );
        let r = Registry::load(d.path()).unwrap();
        assert_eq!(r.version.len(), 16);
        let t = r.table("public.t").unwrap();
        assert_eq!(t.columns["y"].decision, Decision::Blocked);
        assert_eq!(
            t.columns["id"].decision,
            Decision::Publish(Rule::Tokenize {
                domain: "t_id".into()
            })
        );
        let v1 = r.version.clone();
        write(d.path(), "public.t.toml", "table = \"public.t\"\n");
        assert_ne!(Registry::load(d.path()).unwrap().version, v1);
    }

    #[test]
    fn restricted_zip3_is_data() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "public.t.toml", "table = \"public.t\"\n");
        assert_eq!(Registry::load(d.path()).unwrap().restricted_zip3.len(), 17);
        let v1 = Registry::load(d.path()).unwrap().version;
        // An empty or shortened list is refused: it would publish the prefixes HHS lists.
        std::fs::write(d.path().join("restricted_zip3.txt"), "").unwrap();
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("17 of the 17") && e.contains("override-hhs-prefixes"),
            "{e}"
        );
        std::fs::write(d.path().join("restricted_zip3.txt"), "021\n").unwrap();
        assert!(Registry::load(d.path()).is_err());
        std::fs::write(
            d.path().join("restricted_zip3.txt"),
            "override-hhs-prefixes:\n021\n",
        )
        .unwrap();
        assert!(
            Registry::load(d.path())
                .unwrap_err()
                .to_string()
                .contains("reason")
        );
        // The full list plus one more, or an explicit reasoned override, loads.
        let full: String = RESTRICTED_ZIP3.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(d.path().join("restricted_zip3.txt"), format!("{full}021\n")).unwrap();
        assert_eq!(Registry::load(d.path()).unwrap().restricted_zip3.len(), 18);
        std::fs::write(
            d.path().join("restricted_zip3.txt"),
            "# test\noverride-hhs-prefixes: census 2030 figures (ticket DEID-12)\n021\n",
        )
        .unwrap();
        let r = Registry::load(d.path()).unwrap();
        assert_eq!(r.restricted_zip3.as_slice(), ["021".to_string()]);
        assert_ne!(r.version, v1);
        assert_eq!(
            crate::tokenize::zip3_with("02139", &r.restricted_zip3),
            "000"
        );
        assert_eq!(
            crate::tokenize::zip3_with("03601", &r.restricted_zip3),
            "036"
        );
        std::fs::write(d.path().join("restricted_zip3.txt"), "021\n12\n").unwrap();
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("restricted_zip3.txt") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_table_column() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "a.toml",
            "table = \"public.t\"\n[columns]\nssn = { type = \"text\", class = \"sensitive\" }\n",
        );
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("a.toml") && e.contains("public.t") && e.contains("ssn"),
            "{e}"
        );
        assert!(e.contains("line 3"), "{e}");
        write(d.path(), "a.toml", "table = \"public.t\"\n[columns\n");
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("a.toml") && e.contains("line 2"), "{e}");
    }
}
