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

/// What happens to a column's values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Safe: published as is.
    Keep,
    /// Keyed, deterministic token; columns sharing a domain join.
    Tokenize { domain: String },
    /// Replaced by NULL, or by a constant when given.
    Scrub { replacement: Option<String> },
    /// Dates and timestamps reduced to January 1st of their year.
    YearOnly,
    /// ZIP codes reduced to their first three digits (`000` for restricted prefixes).
    Zip3,
}

impl Rule {
    /// A short PHI-free name for schema events and audit records.
    pub fn describe(&self) -> String {
        match self {
            Rule::Keep => "keep".into(),
            Rule::Tokenize { domain } => format!("tokenize({domain})"),
            Rule::Scrub { replacement: None } => "scrub(null)".into(),
            Rule::Scrub {
                replacement: Some(_),
            } => "scrub(constant)".into(),
            Rule::YearOnly => "year_only".into(),
            Rule::Zip3 => "zip3".into(),
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
    pub reviewer: Option<String>,
    pub reason: Option<String>,
    pub reviewed_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TableEntry {
    pub file: PathBuf,
    pub blocked: bool,
    pub profile: String,
    pub reviewer: Option<String>,
    pub reason: Option<String>,
    pub columns: BTreeMap<String, ColumnEntry>,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Content hash of all registry files (hex, 16 characters).
    pub version: String,
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
    columns: BTreeMap<String, ColumnFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnFile {
    #[serde(rename = "type")]
    type_name: String,
    class: String,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    replacement: Option<String>,
    #[serde(default)]
    reviewer: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reviewed_at: Option<String>,
}

const PROFILES: [&str; 2] = ["safe_harbor", "expert_determination"];

impl Registry {
    /// Loads every `*.toml` file of `dir` (sorted by name).
    pub fn load(dir: &Path) -> Result<Self, RegistryError> {
        let io = |source| RegistryError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut hasher = blake3::Hasher::new();
        let mut reg = Registry::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| RegistryError::Io {
                path: path.clone(),
                source,
            })?;
            hasher.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update(&[0]);
            hasher.update(text.as_bytes());
            hasher.update(&[0]);
            let (name, entry) = parse_table_file(&path, &text)?;
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
        reg.version = hasher.finalize().to_hex()[..16].to_owned();
        Ok(reg)
    }

    pub fn table(&self, qualified: &str) -> Option<&TableEntry> {
        self.tables.get(qualified)
    }
}

fn parse_table_file(path: &Path, text: &str) -> Result<(String, TableEntry), RegistryError> {
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
    let profile = f.profile.unwrap_or_else(|| "safe_harbor".into());
    if !PROFILES.contains(&profile.as_str()) {
        return Err(table_err(format!(
            "unknown profile {profile:?} (expected one of {PROFILES:?})"
        )));
    }
    let mut columns = BTreeMap::new();
    for (col, c) in f.columns {
        let col_err = |message: String| RegistryError::Column {
            path: path.to_owned(),
            table: f.table.clone(),
            column: col.clone(),
            message,
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
                let rule = c
                    .rule
                    .as_deref()
                    .ok_or_else(|| col_err("class sensitive needs a rule".into()))?;
                Decision::Publish(match rule {
                    "tokenize" => Rule::Tokenize {
                        domain: c
                            .domain
                            .clone()
                            .filter(|d| !d.is_empty())
                            .ok_or_else(|| col_err("rule tokenize needs a domain".into()))?,
                    },
                    "scrub" => Rule::Scrub {
                        replacement: c.replacement.clone(),
                    },
                    "year_only" => Rule::YearOnly,
                    "zip3" => Rule::Zip3,
                    "keep" => {
                        return Err(col_err(
                            "a sensitive column cannot use rule keep; classify it safe".into(),
                        ));
                    }
                    other => {
                        return Err(col_err(format!(
                            "unknown rule {other:?} (expected tokenize, scrub, year_only or zip3)"
                        )));
                    }
                })
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
                reviewer: c.reviewer,
                reason: c.reason,
                reviewed_at: c.reviewed_at,
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
            columns,
        },
    ))
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
        write(d.path(), "a.toml", "table = \"public.t\"\n[columns\n");
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("a.toml") && e.contains("line 2"), "{e}");
    }
}
