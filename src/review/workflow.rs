//! The reviewer workflow over the registry: what production has that the registry does not
//! decide (`pending`), the scanner's proposals for it (`propose`), and the decisions (`approve`,
//! `block`) written into the registry's files — one reviewable line per column, with reviewer,
//! time and reason. A running stream that is held picks the change up within seconds.
//!
//! The scanner reads a bounded sample of each pending column on the production side and reports
//! per-detector hit rates and the column-name hint — never a value.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use super::error::ReviewError;
pub use super::propose::Proposal;
use super::registry_write::RegistryWrite;
use crate::config::Config;
use crate::deid::registry::Registry;
use crate::deid::scanner::Scanner;
use crate::pg::catalog::{self, TableInfo};

/// Why something is pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Why {
    NewTable,
    NewColumn,
    TypeChanged {
        registry_type: String,
    },
    /// The registry's decision was made for another table or column of that name (renamed,
    /// swapped, dropped and re-created).
    Rebound {
        why: String,
    },
    /// The stream is held on a table production no longer has (dropped before veil decoded
    /// its changes): decide it with `block` (or a registry entry by hand).
    Gone {
        reason: String,
    },
}

/// What the stream recorded it is held on (`_veil.held`), when that table is gone from the
/// catalog: (table, column, type, reason).
async fn holds_on_gone_tables(
    client: &tokio_postgres::Client,
) -> Result<Vec<(String, String, String, String)>, ReviewError> {
    let pgerr = |e: tokio_postgres::Error| {
        ReviewError::Postgres(crate::pg::errors::PgError::new(
            "read the stream's holds",
            &e,
        ))
    };
    let has: bool = client
        .query_one("SELECT to_regclass('_veil.held') IS NOT NULL", &[])
        .await
        .map_err(pgerr)?
        .get(0);
    if !has {
        return Ok(Vec::new());
    }
    Ok(client
        .query(
            "SELECT h.tbl, h.col, h.type_name, h.reason FROM _veil.held h WHERE NOT EXISTS \
             (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname || '.' || c.relname = h.tbl) ORDER BY h.tbl",
            &[],
        )
        .await
        .map_err(pgerr)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// A registry entry production no longer has a column for (dropped or renamed): flagged, so a
/// reviewer removes it before a new column of that name could be mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stale {
    pub table: String,
    pub column: String,
    pub type_name: String,
}

/// One column (or a whole table) production has and the registry does not decide.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub table: String,
    pub column: String,
    pub type_name: String,
    pub why: Why,
    pub proposal: Option<Proposal>,
    /// The other columns (decided in the registry, or pending) in the proposal's token domain:
    /// they join, so they are decided together.
    #[serde(default)]
    pub shares_domain_with: Vec<String>,
}

async fn connect_source(cfg: &Config) -> Result<tokio_postgres::Client, ReviewError> {
    let target = cfg.source()?.dsn.parse()?;
    let client = crate::pg::tls::connect(&target)
        .await
        .map_err(ReviewError::Connect)?;
    catalog::prepare_session(&client).await?;
    Ok(client)
}

/// Every published table's definition.
async fn published_tables(
    client: &tokio_postgres::Client,
    publication: &str,
) -> Result<Vec<TableInfo>, ReviewError> {
    let oids: Vec<u32> = client
        .query(
            "SELECT (quote_ident(schemaname) || '.' || quote_ident(tablename))::regclass::oid \
             FROM pg_catalog.pg_publication_tables WHERE pubname = $1 ORDER BY 1",
            &[&publication],
        )
        .await
        .map_err(|e| {
            ReviewError::Postgres(crate::pg::errors::PgError::new("list published tables", &e))
        })?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::with_capacity(oids.len());
    for oid in oids {
        let mut info = catalog::describe_table(client, oid, None).await?;
        catalog::bind_to_shape_log(client, &mut info, None, false).await?;
        out.push(info);
    }
    Ok(out)
}

/// What production has that the registry does not decide, each with the scanner's proposal.
pub async fn pending(cfg: &Config) -> Result<Vec<Pending>, ReviewError> {
    let registry = Registry::load(&cfg.registry.dir)?;
    let client = connect_source(cfg).await?;
    let scanner = std::sync::Arc::new(
        Scanner::new(&cfg.scanner.mrn_patterns)
            .map_err(|e| ReviewError::Invalid(format!("[scanner] {e}")))?,
    );
    let tables = published_tables(&client, &cfg.source()?.publication).await?;
    let structure = super::propose::Structure::of(&tables);
    let mut out = Vec::new();
    for info in &tables {
        let table = info.qualified();
        let entry = registry.table(&table);
        if entry.is_some_and(|e| e.blocked) {
            continue;
        }
        for c in &info.columns {
            let why = match entry {
                None => Why::NewTable,
                Some(e) => match e.columns.get(&c.name) {
                    None => Why::NewColumn,
                    Some(ce) if ce.type_name != c.type_name => Why::TypeChanged {
                        registry_type: ce.type_name.clone(),
                    },
                    Some(ce)
                        if !matches!(ce.decision, crate::deid::registry::Decision::Blocked) =>
                    {
                        match crate::deid::gate::binding_problem(ce, info, c) {
                            crate::deid::gate::Binding::Hold(why)
                            | crate::deid::gate::Binding::Withhold(why) => Why::Rebound { why },
                            crate::deid::gate::Binding::Bound => continue,
                        }
                    }
                    Some(_) => continue,
                },
            };
            let values = super::propose::sample(&client, info, &c.name).await?;
            let mut key_domain = structure
                .keys
                .get(&(table.clone(), c.name.clone()))
                .cloned();
            if key_domain.is_none()
                && let Some((target, key)) =
                    super::propose::Structure::virtual_target(&tables, info, &c.name)
                && super::propose::contained_in(&client, &values, target, &key).await?
            {
                // An undeclared reference: named after the table and all its values are keys.
                key_domain = structure
                    .keys
                    .get(&(target.qualified(), key.clone()))
                    .cloned();
            }
            let facts = super::propose::ColumnFacts {
                info,
                column: &c.name,
                class: c.class.as_ref(),
                sample: &values,
                key_domain,
                key_with: super::propose::key_partners(info, &c.name),
                key_part_only: super::propose::key_part_only(&tables, info, &c.name),
                lookup: structure.lookups.contains(&(table.clone(), c.name.clone())),
            };
            let proposal = super::propose::checked(
                super::propose::propose(&scanner, &facts),
                c.class.as_ref(),
                info,
                &c.name,
                &scanner,
            );
            out.push(Pending {
                table: table.clone(),
                column: c.name.clone(),
                type_name: c.type_name.clone(),
                why,
                proposal: Some(proposal),
                shares_domain_with: Vec::new(),
            });
        }
    }
    // Accepting every proposal must work: the set passes the check approve runs.
    make_valid(&cfg.registry.dir, &tables, &scanner, &mut out)?;
    // Holds on tables production no longer has: only `block` (or a hand-written entry) decides.
    for (table, column, type_name, reason) in holds_on_gone_tables(&client).await? {
        if registry.table(&table).is_some_and(|e| e.blocked) {
            continue;
        }
        out.push(Pending {
            table,
            column,
            type_name,
            why: Why::Gone { reason },
            proposal: None,
            shares_domain_with: Vec::new(),
        });
    }
    // Who else is in each proposal's domain: pending columns, and the registry's decisions.
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &out {
        if let Some(d) = p.proposal.as_ref().and_then(|x| x.domain.clone()) {
            by_domain
                .entry(d)
                .or_default()
                .push(format!("{}.{}", p.table, p.column));
        }
    }
    for (t, e) in &registry.tables {
        for (c, ce) in &e.columns {
            if let crate::deid::registry::Decision::Publish(r) = &ce.decision
                && let Some(d) = r.domain()
                && let Some(v) = by_domain.get_mut(d)
            {
                v.push(format!("{t}.{c} (decided)"));
            }
        }
    }
    for p in &mut out {
        if let Some(d) = p.proposal.as_ref().and_then(|x| x.domain.as_ref()) {
            let me = format!("{}.{}", p.table, p.column);
            p.shares_domain_with = by_domain[d].iter().filter(|c| **c != me).cloned().collect();
        }
    }
    Ok(out)
}

/// Registry column entries of published tables that production has no column for.
pub async fn stale(cfg: &Config) -> Result<Vec<Stale>, ReviewError> {
    let registry = Registry::load(&cfg.registry.dir)?;
    let client = connect_source(cfg).await?;
    let tables = published_tables(&client, &cfg.source()?.publication).await?;
    let mut out = Vec::new();
    for info in &tables {
        let Some(entry) = registry.table(&info.qualified()) else {
            continue;
        };
        for (name, ce) in &entry.columns {
            if !info.columns.iter().any(|c| &c.name == name) {
                out.push(Stale {
                    table: info.qualified(),
                    column: name.clone(),
                    type_name: ce.type_name.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// The file that keeps `veil registry propose`'s proposals (not a registry file: not `.toml`).
pub fn proposals_path(registry_dir: &Path) -> PathBuf {
    registry_dir.join("proposals.json")
}

/// `veil registry propose`: proposals for every pending column, stored for
/// `approve --all-proposed`.
pub async fn propose(cfg: &Config) -> Result<Vec<Pending>, ReviewError> {
    let items = pending(cfg).await?;
    let path = proposals_path(&cfg.registry.dir);
    let json = serde_json::to_string_pretty(&items)
        .map_err(|e| ReviewError::Invalid(format!("proposals: {e}")))?;
    std::fs::write(&path, json).map_err(|source| ReviewError::Io { path, source })?;
    Ok(items)
}

/// A decision for one column.
#[derive(Debug, Clone, Default)]
pub struct ColumnDecision {
    /// `safe`, `sensitive` or `blocked`.
    pub class: String,
    pub rule: Option<String>,
    pub domain: Option<String>,
    pub kind: Option<String>,
    pub entity: Option<String>,
    /// The column's profile; by default the table's, or the profile the domain already has.
    pub profile: Option<String>,
    pub by: String,
    pub reason: String,
    /// `Some(false)`: the outbound scanner does not sample this safe column.
    pub scan: Option<bool>,
    /// The `redact` rule's mode: `spans` (the default) or `whole`.
    pub mode: Option<String>,
    /// The `json` rule's paths (path, rule `keep` or `scrub`).
    pub paths: Vec<(String, String)>,
    /// The `date_token` rule's other key columns (the tuple a date is unique within).
    pub with: Vec<String>,
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn today_utc() -> String {
    now_rfc3339()[..10].to_owned()
}

fn now_rfc3339() -> String {
    // UTC, seconds precision, without a date crate.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::civil::civil_from_days(days);
    let date = format!("{y:04}-{m:02}-{d:02}");
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Writes (or replaces) one column's line in the table's registry file, creating the file for a
/// new table, and checks that the whole registry still loads (restoring the file if not).
pub fn write_decision(
    registry_dir: &Path,
    table: &str,
    column: &str,
    type_name: &str,
    d: &ColumnDecision,
) -> Result<PathBuf, ReviewError> {
    write_checked_decision(registry_dir, table, column, type_name, None, d, &|_| Ok(()))
}

/// [`write_decision`], refused (nothing written) when `check` rejects the registry it makes.
/// `bound_to` is the (table oid, attnum) of the column the decision is made for, from the
/// catalog: the line records it, and the stream holds a column that is not that one.
pub fn write_checked_decision(
    registry_dir: &Path,
    table: &str,
    column: &str,
    type_name: &str,
    bound_to: Option<(u32, i16)>,
    d: &ColumnDecision,
    check: &dyn Fn(&Registry) -> Result<(), String>,
) -> Result<PathBuf, ReviewError> {
    let mut w = RegistryWrite::begin(registry_dir)?;
    let path = stage_checked(&mut w, table, column, type_name, bound_to, d, check)?;
    w.commit()?;
    tracing::info!(table, column, class = %d.class, rule = ?d.rule, by = %d.by, "registry decision written");
    Ok(path)
}

/// Stages one decision in `w` and checks the registry it makes (the whole registry loads, and
/// `check` accepts it); an error names the column and says nothing was written.
fn stage_checked(
    w: &mut RegistryWrite,
    table: &str,
    column: &str,
    type_name: &str,
    bound_to: Option<(u32, i16)>,
    d: &ColumnDecision,
    check: &dyn Fn(&Registry) -> Result<(), String>,
) -> Result<PathBuf, ReviewError> {
    let path = stage_decision(w, table, column, type_name, bound_to, d)?;
    let problem = match w.registry() {
        Err(e) => Some(format!(
            "the decision does not make a valid registry, nothing written: {e}"
        )),
        Ok(r) => check(&r)
            .err()
            .map(|why| format!("{table}.{column}: {why}; nothing written")),
    };
    match problem {
        Some(p) => Err(ReviewError::Invalid(p)),
        None => Ok(path),
    }
}

/// Stages (or replaces) one column's line in the table's registry file in `w`, creating the
/// file for a new table. Nothing is written until `w` commits.
fn stage_decision(
    w: &mut RegistryWrite,
    table: &str,
    column: &str,
    type_name: &str,
    bound_to: Option<(u32, i16)>,
    d: &ColumnDecision,
) -> Result<PathBuf, ReviewError> {
    if d.by.trim().is_empty() || d.reason.trim().is_empty() {
        return Err(ReviewError::Invalid(
            "a decision needs --by (who decides) and --reason".into(),
        ));
    }
    // The file and the domains' profiles as they were when the lock was taken (a file staged
    // for a new table has the name `table_file` gives it).
    let registry = w.base();
    let path = match registry.table(table) {
        Some(e) => e.file.clone(),
        None => table_file(w.dir(), table),
    };
    let old = w.text(&path);
    let table_profile = registry
        .table(table)
        .map(|t| t.profile)
        .unwrap_or(crate::deid::registry::Profile::SafeHarbor);
    // A column joining an existing domain takes that domain's profile, so the tokens agree.
    let domain_profile = d.domain.as_ref().and_then(|dom| {
        registry.tables.values().find_map(|t| {
            t.columns.values().find_map(|c| match &c.decision {
                crate::deid::registry::Decision::Publish(r) if r.domain() == Some(dom.as_str()) => {
                    Some(c.profile)
                }
                _ => None,
            })
        })
    });
    let profile = d.profile.clone().or_else(|| {
        domain_profile
            .filter(|p| *p != table_profile)
            .map(|p| p.name().to_owned())
    });
    let mut fields = vec![
        format!("type = {}", toml_str(type_name)),
        format!("class = {}", toml_str(&d.class)),
    ];
    if let Some(p) = &profile {
        fields.push(format!("profile = {}", toml_str(p)));
    }
    for (k, v) in [
        ("rule", &d.rule),
        ("domain", &d.domain),
        ("kind", &d.kind),
        ("entity", &d.entity),
        ("mode", &d.mode),
    ] {
        if let Some(v) = v {
            fields.push(format!("{k} = {}", toml_str(v)));
        }
    }
    if let Some(scan) = d.scan {
        fields.push(format!("scan = {scan}"));
    }
    if !d.with.is_empty() {
        let with: Vec<String> = d.with.iter().map(|c| toml_str(c)).collect();
        fields.push(format!("with = [{}]", with.join(", ")));
    }
    if !d.paths.is_empty() {
        let paths: Vec<String> = d
            .paths
            .iter()
            .map(|(p, r)| format!("{{ path = {}, rule = {} }}", toml_str(p), toml_str(r)))
            .collect();
        fields.push(format!("paths = [{}]", paths.join(", ")));
    }
    if let Some((relid, attnum)) = bound_to {
        fields.push(format!("relid = {relid}, attnum = {attnum}"));
    }
    fields.push(format!("reviewer = {}", toml_str(&d.by)));
    fields.push(format!("reviewed_at = {}", toml_str(&now_rfc3339())));
    fields.push(format!("reason = {}", toml_str(&d.reason)));
    let key = if column
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        column.to_owned()
    } else {
        toml_str(column)
    };
    let line = format!("{key} = {{ {} }}", fields.join(", "));
    let text = match &old {
        None => format!(
            "# Classification of {table}, started by `veil registry`.\ntable = {}\n\n[columns]\n{line}\n",
            toml_str(table)
        ),
        Some(text) => {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let mut in_columns = false;
            let mut replaced = false;
            let mut columns_at = None;
            for (i, l) in lines.iter_mut().enumerate() {
                let t = l.trim_start();
                if t.starts_with('[') {
                    in_columns = t.starts_with("[columns]");
                    if in_columns {
                        columns_at = Some(i);
                    }
                    if t.starts_with(&format!("[columns.{key}]")) {
                        return Err(ReviewError::Invalid(format!(
                            "{}: column {column} is written as a [columns.{key}] table; edit it by hand",
                            path.display()
                        )));
                    }
                    continue;
                }
                let starts = t.strip_prefix(&key).is_some_and(|r| {
                    let r = r.trim_start();
                    r.starts_with('=')
                });
                if in_columns && starts {
                    *l = line.clone();
                    replaced = true;
                }
            }
            if !replaced {
                match columns_at {
                    Some(i) => {
                        // After the last line of the [columns] section.
                        let mut end = i + 1;
                        while end < lines.len() && !lines[end].trim_start().starts_with('[') {
                            end += 1;
                        }
                        while end > i + 1 && lines[end - 1].trim().is_empty() {
                            end -= 1;
                        }
                        lines.insert(end, line.clone());
                    }
                    None => {
                        lines.push(String::new());
                        lines.push("[columns]".into());
                        lines.push(line.clone());
                    }
                }
            }
            let mut t = lines.join("\n");
            t.push('\n');
            t
        }
    };
    w.stage(path.clone(), text);
    Ok(path)
}

/// The registry file for a table not yet classified: `<dir>/<schema.table>.toml`, every
/// character but letters, digits, `_`, `-` and `.` written as `%XX` (a quoted identifier may
/// hold `/`), and a leading `.` too — always a plain file name inside `dir`.
pub fn table_file(dir: &Path, table: &str) -> PathBuf {
    let mut name = String::new();
    for (i, b) in table.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    dir.join(format!("{name}.toml"))
}

/// Splits `schema.table.column`.
pub fn split_target(target: &str) -> Result<(String, Option<String>), ReviewError> {
    let parts: Vec<&str> = target.split('.').collect();
    match parts.as_slice() {
        [s, t] => Ok((format!("{s}.{t}"), None)),
        [s, t, c] => Ok((format!("{s}.{t}"), Some((*c).to_owned()))),
        _ => Err(ReviewError::Invalid(format!(
            "{target:?}: expected schema.table.column (or schema.table)"
        ))),
    }
}

/// The table as production has it now.
async fn describe(client: &tokio_postgres::Client, table: &str) -> Result<TableInfo, ReviewError> {
    // By schema and name as the catalog spells them (the registry's `schema.table`), not
    // parsed as SQL: a quoted identifier may hold any character.
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    let oid: u32 = client
        .query_opt(
            "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
             ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 \
             AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .map_err(|e| ReviewError::Postgres(crate::pg::errors::PgError::new("look up table", &e)))?
        .map(|r| r.get::<_, u32>(0))
        .ok_or_else(|| {
            ReviewError::Invalid(format!("table {table} does not exist in production"))
        })?;
    Ok(catalog::describe_table(client, oid, None).await?)
}

/// The `format_type` spelling of a column as production has it now.
fn column_type(info: &TableInfo, column: &str) -> Result<String, ReviewError> {
    info.columns
        .iter()
        .find(|c| c.name == column)
        .map(|c| c.type_name.clone())
        .ok_or_else(|| {
            ReviewError::Invalid(format!(
                "column {}.{column} does not exist in production",
                info.qualified()
            ))
        })
}

/// The (table oid, attnum) of a column as the catalog has it now: what a decision binds to.
fn column_identity(info: &TableInfo, column: &str) -> Option<(u32, i16)> {
    info.columns
        .iter()
        .find(|c| c.name == column && c.attnum > 0)
        .map(|c| (info.oid, c.attnum))
}

/// The one check of a decision, wherever it comes from (`approve`, `approve --all-proposed`,
/// the review page, and the proposer on its own proposals): the decision for `column` in a
/// registry that loads (domains agree) must bind to the column's type and keep a key's values
/// distinct (`review::propose::rule_fits`), may not block a replica-identity column, and the
/// gate must plan the table with it — so what is accepted is what the stream streams.
fn fits_check<'a>(
    info: &'a TableInfo,
    column: &'a str,
    scanner: &'a std::sync::Arc<Scanner>,
) -> impl Fn(&Registry) -> Result<(), String> + 'a {
    move |registry: &Registry| {
        let Some(entry) = registry
            .table(&info.qualified())
            .and_then(|t| t.columns.get(column))
        else {
            return Ok(());
        };
        match &entry.decision {
            crate::deid::registry::Decision::Blocked => {
                if info.primary_key.iter().any(|k| k == column)
                    || info.identity_keys().iter().any(|k| k == column)
                {
                    let date = info.columns.iter().any(|c| {
                        c.name == column
                            && matches!(
                                c.class,
                                Some(
                                    catalog::TypeClass::Date
                                        | catalog::TypeClass::Timestamp
                                        | catalog::TypeClass::Timestamptz
                                )
                            )
                    });
                    return Err(format!(
                        "the column is part of the replica identity (the key dev applies updates \
                         and deletes by) and cannot be blocked: use {}",
                        if date { "date_token" } else { "tokenize" }
                    ));
                }
            }
            crate::deid::registry::Decision::Publish(rule) => {
                let class = info
                    .columns
                    .iter()
                    .find(|c| c.name == column)
                    .and_then(|c| c.class.as_ref());
                super::propose::rule_fits(rule, entry.profile, class, info, column, scanner)?;
            }
        }
        gate_check(info, column, registry, scanner)
    }
}

/// The gate plans the table with `column`'s decision from `registry`: every other column stands
/// in as kept (or blocked, for a type veil does not publish), so only a problem of this
/// decision counts — another column's stale or pending decision is not this one's to answer.
fn gate_check(
    info: &TableInfo,
    column: &str,
    registry: &Registry,
    scanner: &std::sync::Arc<Scanner>,
) -> Result<(), String> {
    use crate::deid::registry::{ColumnEntry, Decision, Rule};
    let table = info.qualified();
    let Some(entry) = registry.table(&table) else {
        return Ok(());
    };
    let Some(decided) = entry.columns.get(column) else {
        return Ok(());
    };
    let mut only = entry.clone();
    only.columns.clear();
    for c in &info.columns {
        let ce = if c.name == column {
            decided.clone()
        } else {
            ColumnEntry {
                type_name: c.type_name.clone(),
                decision: if c.class.is_some() {
                    Decision::Publish(Rule::Keep)
                } else {
                    Decision::Blocked
                },
                profile: entry.profile,
                reviewer: None,
                reason: None,
                reviewed_at: None,
                scan: false,
                relid: None,
                attnum: None,
            }
        };
        only.columns.insert(c.name.clone(), ce);
    }
    // The gate plans one table from its own entry: a registry of that entry alone.
    let r = Registry {
        version: registry.version.clone(),
        restricted_zip3: registry.restricted_zip3.clone(),
        tables: BTreeMap::from([(table, only)]),
    };
    let master = crate::deid::tokenize::MasterKey::new([0; 32]);
    match crate::deid::gate::plan_table("", info, &info.identity_keys(), &r, &master, scanner) {
        Err(e) if e.subject().1 == column => Err(format!("the stream would hold on it: {e}")),
        _ => Ok(()),
    }
}

/// `veil registry approve TABLE.COLUMN …`: records the decision with the column's current type,
/// refusing (nothing written) a rule that does not fit the type or does not keep a key unique.
pub async fn approve(
    cfg: &Config,
    target: &str,
    d: &ColumnDecision,
) -> Result<PathBuf, ReviewError> {
    let (table, column) = split_target(target)?;
    let column = column.ok_or_else(|| {
        ReviewError::Invalid("approve takes schema.table.column (block takes a whole table)".into())
    })?;
    let client = connect_source(cfg).await?;
    let info = describe(&client, &table).await?;
    let type_name = column_type(&info, &column)?;
    let scanner = std::sync::Arc::new(
        Scanner::new(&cfg.scanner.mrn_patterns)
            .map_err(|e| ReviewError::Invalid(format!("[scanner] {e}")))?,
    );
    write_checked_decision(
        &cfg.registry.dir,
        &table,
        &column,
        &type_name,
        column_identity(&info, &column),
        d,
        &fits_check(&info, &column, &scanner),
    )
}

/// `veil registry block TABLE[.COLUMN] --by --reason`.
pub async fn block(
    cfg: &Config,
    target: &str,
    by: &str,
    reason: &str,
) -> Result<PathBuf, ReviewError> {
    let (table, column) = split_target(target)?;
    match column {
        Some(column) => {
            let client = connect_source(cfg).await?;
            let info = describe(&client, &table).await?;
            let type_name = column_type(&info, &column)?;
            write_checked_decision(
                &cfg.registry.dir,
                &table,
                &column,
                &type_name,
                column_identity(&info, &column),
                &ColumnDecision {
                    class: "blocked".into(),
                    by: by.into(),
                    reason: reason.into(),
                    scan: None,
                    ..Default::default()
                },
                &|_| Ok(()),
            )
        }
        None => set_table_blocked(cfg, &table, true, by, reason).await,
    }
}

/// `veil registry unblock TABLE --by --reason`: lifts a whole-table block. A loosening decision:
/// the reason is required and the audit record marks it. The table's columns keep their own
/// decisions; a column without one holds the stream as usual. (A blocked *column* is unblocked
/// by approving it with a rule.)
pub async fn unblock(
    cfg: &Config,
    target: &str,
    by: &str,
    reason: &str,
) -> Result<PathBuf, ReviewError> {
    let (table, column) = split_target(target)?;
    if column.is_some() {
        return Err(ReviewError::Invalid(
            "unblock takes a whole table; a blocked column is unblocked by `veil registry approve` with a rule".into(),
        ));
    }
    set_table_blocked(cfg, &table, false, by, reason).await
}

/// Sets or lifts a whole-table block in the table's registry file, recording who, when and
/// why. The table must exist in production; the file name comes from the catalog's name (or
/// the registry's own entry), never from request text.
async fn set_table_blocked(
    cfg: &Config,
    table: &str,
    blocked: bool,
    by: &str,
    reason: &str,
) -> Result<PathBuf, ReviewError> {
    if by.trim().is_empty() || reason.trim().is_empty() {
        return Err(ReviewError::Invalid(
            "a decision needs --by and --reason".into(),
        ));
    }
    let client = connect_source(cfg).await?;
    let table = match describe(&client, table).await {
        Ok(info) => info.qualified(),
        // A table production no longer has can be blocked when the stream is held on it.
        Err(e) if blocked => holds_on_gone_tables(&client)
            .await?
            .into_iter()
            .map(|h| h.0)
            .find(|t| t == table)
            .ok_or(e)?,
        Err(e) => return Err(e),
    };
    let mut w = RegistryWrite::begin(&cfg.registry.dir)?;
    let registry = w.registry()?;
    let existing = registry.table(&table);
    if !blocked && !existing.is_some_and(|e| e.blocked) {
        return Err(ReviewError::Invalid(format!("{table} is not blocked")));
    }
    let path = match existing {
        Some(e) => e.file.clone(),
        None => table_file(&cfg.registry.dir, &table),
    };
    let old = w.text(&path);
    let mut doc: toml_edit::DocumentMut = match &old {
        Some(text) => text.parse().map_err(|e: toml_edit::TomlError| {
            ReviewError::Invalid(format!("{}: {}", path.display(), e.message()))
        })?,
        None => {
            let mut d = toml_edit::DocumentMut::new();
            d.decor_mut().set_prefix(format!(
                "# Classification of {table}, written by `veil registry block`.\n"
            ));
            d["table"] = toml_edit::value(table.as_str());
            d
        }
    };
    doc["blocked"] = toml_edit::value(blocked);
    doc["reviewer"] = toml_edit::value(by);
    doc["reviewed_at"] = toml_edit::value(now_rfc3339());
    doc["reason"] = toml_edit::value(reason);
    // Top-level keys stay above the [columns] table.
    doc.sort_values_by(|a, _, b, _| {
        let rank = |k: &toml_edit::Key| match k.get() {
            "table" => 0,
            "blocked" => 1,
            "profile" => 2,
            "reviewer" => 3,
            "reviewed_at" => 4,
            "reason" => 5,
            _ => 6,
        };
        rank(a).cmp(&rank(b))
    });
    w.stage(path.clone(), doc.to_string());
    w.commit()?;
    tracing::info!(table = %table, blocked, by, "registry table decision written");
    Ok(path)
}

/// Whether the registry already decides the pending column, for its current type.
fn decided_already(registry: &Registry, p: &Pending) -> bool {
    registry
        .table(&p.table)
        .and_then(|t| t.columns.get(&p.column))
        .is_some_and(|c| c.type_name == p.type_name)
}

/// The decision accepting a proposal (its evidence as the reason).
fn proposal_decision(prop: &super::propose::Proposal, by: &str) -> ColumnDecision {
    ColumnDecision {
        class: prop.class.clone(),
        rule: prop.rule.clone(),
        domain: prop.domain.clone(),
        kind: prop.kind.clone(),
        entity: None,
        profile: None,
        by: by.into(),
        reason: format!("accepted scanner proposal: {}", prop.evidence()),
        scan: prop.scan,
        mode: prop.mode.clone(),
        paths: prop
            .paths
            .iter()
            .map(|x| (x.path.clone(), x.rule.clone()))
            .collect(),
        with: prop.with.clone(),
    }
}

/// Makes the proposals a set `approve --all-proposed` accepts and the stream streams: each is
/// staged in turn, in the order approve takes them, under the check approve runs
/// ([`fits_check`], on the registry the earlier ones make); one that is refused is replaced by
/// the closest decision that passes — a domain of its own when its domain holds another form
/// elsewhere, a token rule on a key, `blocked` elsewhere — and says why in its notes. Nothing is
/// written.
fn make_valid(
    dir: &Path,
    tables: &[TableInfo],
    scanner: &std::sync::Arc<Scanner>,
    out: &mut [Pending],
) -> Result<(), ReviewError> {
    let mut w = RegistryWrite::begin(dir)?;
    let registry = w.registry()?;
    let mut i = 0;
    while i < out.len() {
        // A table's proposals together first: staged, loaded once, each checked.
        let end = i + out[i..]
            .iter()
            .take_while(|p| p.table == out[i].table)
            .count();
        if table_passes(&mut w, &registry, tables, scanner, &out[i..end])? {
            i = end;
            continue;
        }
        column_by_column(&mut w, &registry, tables, scanner, &mut out[i..end])?;
        i = end;
    }
    Ok(())
}

/// Whether a table's proposals pass as they are (then they stay staged in `w`).
fn table_passes(
    w: &mut RegistryWrite,
    registry: &Registry,
    tables: &[TableInfo],
    scanner: &std::sync::Arc<Scanner>,
    group: &[Pending],
) -> Result<bool, ReviewError> {
    let Some(info) = group
        .first()
        .and_then(|p| tables.iter().find(|t| t.qualified() == p.table))
    else {
        return Ok(true);
    };
    let before = w.checkpoint();
    let mut staged = Vec::new();
    for p in group {
        let Some(prop) = &p.proposal else { continue };
        if decided_already(registry, p) {
            continue;
        }
        let d = proposal_decision(prop, "proposal check");
        match stage_decision(
            w,
            &p.table,
            &p.column,
            &p.type_name,
            column_identity(info, &p.column),
            &d,
        ) {
            Ok(_) => staged.push(p.column.as_str()),
            // Refused, or an earlier proposal of the table made a registry that does not
            // load: column by column finds which.
            Err(_) => {
                w.rollback(before);
                return Ok(false);
            }
        }
    }
    let ok = match w.registry() {
        Ok(r) => staged
            .iter()
            .all(|c| fits_check(info, c, scanner)(&r).is_ok()),
        Err(_) => false,
    };
    if !ok {
        w.rollback(before);
    }
    Ok(ok)
}

/// Each proposal of a table staged and checked in turn, refused ones repaired ([`repair`]).
fn column_by_column(
    w: &mut RegistryWrite,
    registry: &Registry,
    tables: &[TableInfo],
    scanner: &std::sync::Arc<Scanner>,
    group: &mut [Pending],
) -> Result<(), ReviewError> {
    for p in group.iter_mut() {
        let Some(info) = tables.iter().find(|t| t.qualified() == p.table) else {
            continue;
        };
        if p.proposal.is_none() || decided_already(registry, p) {
            continue;
        }
        let Some(prop) = p.proposal.as_mut() else {
            continue;
        };
        let class = info
            .columns
            .iter()
            .find(|c| c.name == p.column)
            .and_then(|c| c.class.clone());
        let key = info.primary_key.contains(&p.column)
            || info.identity_keys().contains(&p.column)
            || info
                .unique_keys
                .iter()
                .any(|(_, cols)| cols.contains(&p.column))
            || info
                .foreign_keys
                .iter()
                .any(|fk| fk.columns.contains(&p.column));
        for attempt in 0.. {
            let before = w.checkpoint();
            let staged = stage_checked(
                w,
                &p.table,
                &p.column,
                &p.type_name,
                column_identity(info, &p.column),
                &proposal_decision(prop, "proposal check"),
                &fits_check(info, &p.column, scanner),
            );
            let why = match staged {
                Ok(_) => break,
                Err(ReviewError::Invalid(why)) => why,
                Err(e) => return Err(e),
            };
            w.rollback(before);
            if attempt >= 4 {
                // Nothing streams (a key of a type veil does not publish): a person decides.
                prop.class = "blocked".into();
                prop.rule = None;
                prop.notes.push(format!(
                    "needs a person: no decision lets the table stream ({why})"
                ));
                break;
            }
            repair(prop, info, &p.column, class.as_ref(), key, attempt, &why);
        }
    }
    Ok(())
}

/// The next decision to try for a proposal the check refused (`attempt` counts the refusals).
fn repair(
    prop: &mut super::propose::Proposal,
    info: &TableInfo,
    column: &str,
    class: Option<&catalog::TypeClass>,
    key: bool,
    attempt: usize,
    why: &str,
) {
    use catalog::TypeClass;
    let date = matches!(
        class,
        Some(TypeClass::Date | TypeClass::Timestamp | TypeClass::Timestamptz)
    );
    let own_domain = format!("{}_{}", info.name, column);
    prop.notes
        .push(format!("the first proposal was refused: {why}"));
    if attempt == 0
        && why.contains("is used as")
        && let (Some(d), Some(c)) = (prop.domain.clone(), class)
    {
        // Another column writes this domain in another form (type, rule or profile): a domain
        // of its own for this form, shared by the columns of the same form.
        let form = c
            .name()
            .replace(|ch: char| !ch.is_ascii_alphanumeric(), "_");
        prop.domain = Some(format!("{d}_{form}"));
        prop.notes.push(format!(
            "a domain of its own ({d}_{form}): {d} is written in another form elsewhere, so the \
             two do not join in dev"
        ));
        return;
    }
    if key && attempt <= 1 {
        prop.class = "sensitive".into();
        prop.rule = Some(if date { "date_token" } else { "tokenize" }.into());
        prop.domain = Some(own_domain);
        prop.kind = None;
        prop.mode = None;
        prop.paths.clear();
        prop.scan = None;
        prop.with = if date {
            super::propose::key_partners(info, column)
        } else {
            Vec::new()
        };
        prop.confidence = "low".into();
        prop.notes
            .push("needs review: a key keeps a token rule of its own".into());
        return;
    }
    if !key {
        prop.class = "blocked".into();
        prop.rule = None;
        prop.domain = None;
        prop.kind = None;
        prop.mode = None;
        prop.paths.clear();
        prop.with.clear();
        prop.scan = None;
        prop.confidence = "low".into();
        prop.notes
            .push("needs review: blocked until a reviewer finds a rule that fits".into());
        return;
    }
    // A key no rule keeps a key (a type no token exists for): kept, for a person to look at.
    prop.class = "safe".into();
    prop.rule = None;
    prop.domain = None;
    prop.kind = None;
    prop.mode = None;
    prop.paths.clear();
    prop.with.clear();
    prop.scan = Some(false);
    prop.confidence = "low".into();
    prop.notes
        .push("needs review: no token rule fits this key's type; kept so the table streams".into());
}

/// `veil registry approve --all-proposed --by NAME`: accepts every stored proposal whose
/// column is still pending, recording the proposal's evidence as the reason.
pub async fn approve_all_proposed(cfg: &Config, by: &str) -> Result<usize, ReviewError> {
    let path = proposals_path(&cfg.registry.dir);
    let text = std::fs::read_to_string(&path).map_err(|source| ReviewError::Io {
        path: path.clone(),
        source,
    })?;
    let items: Vec<Pending> = serde_json::from_str(&text)
        .map_err(|e| ReviewError::Invalid(format!("{}: {e}", path.display())))?;
    accept_proposals(cfg, by, &items).await
}

/// Accepts the current proposals for one table's pending columns (the review page's "accept
/// this table"), with the same check and all-or-nothing write as `--all-proposed`; each column's
/// line names the reviewer and the proposal's evidence, and the stream audits each decision.
pub async fn approve_table_proposals(
    cfg: &Config,
    table: &str,
    by: &str,
) -> Result<usize, ReviewError> {
    let items: Vec<Pending> = pending(cfg)
        .await?
        .into_iter()
        .filter(|p| p.table == table)
        .collect();
    if items.iter().all(|p| p.proposal.is_none()) {
        return Err(ReviewError::Invalid(format!(
            "{table} has no pending proposal"
        )));
    }
    accept_proposals(cfg, by, &items).await
}

/// Stages every proposal of `items` whose column is still pending, checks each, and writes them
/// together — or nothing.
async fn accept_proposals(cfg: &Config, by: &str, items: &[Pending]) -> Result<usize, ReviewError> {
    let client = connect_source(cfg).await?;
    let scanner = std::sync::Arc::new(
        Scanner::new(&cfg.scanner.mrn_patterns)
            .map_err(|e| ReviewError::Invalid(format!("[scanner] {e}")))?,
    );
    // Production's tables first (nothing is locked while the catalog answers).
    let mut described: BTreeMap<String, TableInfo> = BTreeMap::new();
    for p in items {
        if p.proposal.is_some() && !described.contains_key(&p.table) {
            let info = describe(&client, &p.table).await?;
            described.insert(p.table.clone(), info);
        }
    }
    // All or nothing: every decision staged and checked against the registry as it is now,
    // then written together; the first refusal names its column and nothing is written.
    let mut w = RegistryWrite::begin(&cfg.registry.dir)?;
    let registry = w.registry()?;
    let mut n = 0;
    for p in items {
        let Some(prop) = &p.proposal else { continue };
        if decided_already(&registry, p) {
            continue;
        }
        let info = &described[&p.table];
        stage_checked(
            &mut w,
            &p.table,
            &p.column,
            &p.type_name,
            column_identity(info, &p.column),
            &proposal_decision(prop, by),
            &fits_check(info, &p.column, &scanner),
        )
        .map_err(|e| match e {
            ReviewError::Invalid(m) => ReviewError::Invalid(format!(
                "{m} (--all-proposed accepts the whole set or none of it: no decision of the set was written)"
            )),
            other => other,
        })?;
        n += 1;
    }
    if n > 0 {
        w.commit()?;
        tracing::info!(decisions = n, by, "registry: proposals accepted");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_written_as_reviewable_lines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("public.t.toml"),
            "table = \"public.t\"\n\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\n# trailing comment\n",
        )
        .unwrap();
        let dec = ColumnDecision {
            class: "sensitive".into(),
            rule: Some("ssn".into()),
            domain: Some("ssn".into()),
            by: "kim".into(),
            reason: "holds SSNs".into(),
            scan: None,
            ..Default::default()
        };
        write_decision(d.path(), "public.t", "notes2", "text", &dec).unwrap();
        let r = Registry::load(d.path()).unwrap();
        let c = &r.table("public.t").unwrap().columns["notes2"];
        assert_eq!(c.reviewer.as_deref(), Some("kim"));
        assert!(c.reviewed_at.is_some());
        // Replacing the same column (a type change) keeps one line.
        write_decision(
            d.path(),
            "public.t",
            "notes2",
            "character varying(20)",
            &dec,
        )
        .unwrap();
        let text = std::fs::read_to_string(d.path().join("public.t.toml")).unwrap();
        assert_eq!(text.matches("notes2 =").count(), 1, "{text}");
        assert!(text.contains("# trailing comment"));
        // A new table gets a file.
        write_decision(
            d.path(),
            "public.n",
            "id",
            "integer",
            &ColumnDecision {
                class: "safe".into(),
                by: "kim".into(),
                reason: "sequence".into(),
                scan: None,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            Registry::load(d.path())
                .unwrap()
                .table("public.n")
                .is_some()
        );
        // An invalid decision writes nothing.
        let bad = ColumnDecision {
            class: "sensitive".into(),
            rule: Some("tokenize".into()),
            by: "kim".into(),
            reason: "x".into(),
            scan: None,
            ..Default::default()
        };
        let e = write_decision(d.path(), "public.t", "x", "text", &bad).unwrap_err();
        assert!(e.to_string().contains("domain"), "{e}");
        assert!(
            !std::fs::read_to_string(d.path().join("public.t.toml"))
                .unwrap()
                .contains("x = ")
        );
        // No reviewer, no decision.
        let anon = ColumnDecision {
            class: "safe".into(),
            ..Default::default()
        };
        assert!(write_decision(d.path(), "public.t", "y", "text", &anon).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
