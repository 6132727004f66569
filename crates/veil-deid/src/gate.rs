//! The classification gate, fail closed. For each table it turns the catalog definition and the
//! registry into a [`TablePlan`]: what happens to every column, and the schema event dev gets.
//! A table or column without a registry decision, a type that differs from the registry's, or
//! a type veil cannot carry is an error naming database, table, column and type — the stream
//! stops there and nothing of that table is published. Row values pass through
//! [`TablePlan::transform`] and nowhere else on their way out.

use crate::pg::catalog::{TableInfo, TypeClass};
use crate::pg::lsn::fmt_lsn;
use crate::pg::tuple::{TupleData, TupleValue};
use crate::proto;
use crate::registry::{Decision, Registry};
use crate::scanner::Scanner;
use crate::tokenize::{self, BindCx, Cx, DeidError, MasterKey, RuleKey, TokenStore, VaultRequest};
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GateError {
    #[error(
        "held: table {database}.{table} has no registry entry (classify it in schema-registry/)"
    )]
    UnclassifiedTable { database: String, table: String },
    #[error("held: column {database}.{table}.{column} ({type_name}) has no registry decision")]
    UnclassifiedColumn {
        database: String,
        table: String,
        column: String,
        type_name: String,
    },
    #[error(
        "held: column {database}.{table}.{column} changed type: registry says {registry_type}, \
         production has {actual_type}"
    )]
    TypeChanged {
        database: String,
        table: String,
        column: String,
        registry_type: String,
        actual_type: String,
    },
    #[error(
        "held: column {database}.{table}.{column} ({type_name}): {why}; it is held as a new \
         column until a reviewer decides (veil registry pending / approve)"
    )]
    Rebound {
        database: String,
        table: String,
        column: String,
        type_name: String,
        why: String,
    },
    #[error("unsupported type {type_name} in column {table}.{column}")]
    UnsupportedType {
        table: String,
        column: String,
        type_name: String,
    },
    #[error("column {table}.{column}: {source}")]
    Rule {
        table: String,
        column: String,
        #[source]
        source: DeidError,
    },
    #[error(
        "column {table}.{column} is part of the replica identity and cannot be blocked (tokenize it)"
    )]
    BlockedKey { table: String, column: String },
    #[error("column {table}.{column} ({type_name}) at LSN {lsn}: {problem}")]
    Value {
        table: String,
        column: String,
        type_name: String,
        lsn: String,
        problem: String,
    },
}

impl GateError {
    /// (table, column, type) the problem is about, for logs, metrics and the pending list.
    pub fn subject(&self) -> (String, String, String) {
        match self {
            GateError::UnclassifiedTable { table, .. } => {
                (table.clone(), "*".into(), "table".into())
            }
            GateError::UnclassifiedColumn {
                table,
                column,
                type_name,
                ..
            }
            | GateError::UnsupportedType {
                table,
                column,
                type_name,
            }
            | GateError::Value {
                table,
                column,
                type_name,
                ..
            }
            | GateError::Rebound {
                table,
                column,
                type_name,
                ..
            } => (table.clone(), column.clone(), type_name.clone()),
            GateError::TypeChanged {
                table,
                column,
                actual_type,
                ..
            } => (table.clone(), column.clone(), actual_type.clone()),
            GateError::Rule { table, column, .. } | GateError::BlockedKey { table, column } => {
                (table.clone(), column.clone(), String::new())
            }
        }
    }
}

/// How a registry decision relates to the column it is applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Made for this column (or bound by name, with nothing in the shape log against it).
    Bound,
    /// Made for another table or column — an older one of that name, or one the log cannot
    /// place: the column is held as new.
    Hold(String),
    /// Made for a table or column that takes this name only later in the WAL (the stream is
    /// behind a rename or a re-created column the reviewer already decided). This older
    /// object's values have no decision of their own any more: they are withheld (a column is
    /// not published, a table's rows are dropped), never published under the newer decision.
    Withhold(String),
}

/// Whether a registry decision belongs to this column: made for another table (oid) or
/// another column of the same name (attnum), or — for a decision not bound to either (written
/// by hand or before binding) — a name that meant another table or column before. `info`
/// carries the attnums and the history at the decoded position (`catalog::bind_to_shape_log`).
pub fn binding_problem(
    ce: &crate::registry::ColumnEntry,
    info: &crate::pg::catalog::TableInfo,
    c: &crate::pg::catalog::ColumnInfo,
) -> Binding {
    let h = &info.history;
    match ce.relid {
        Some(r) if r != info.oid => {
            let why = format!(
                "the decision was made for another table (oid {r}; this table is oid {}): \
                 renamed, swapped or re-created",
                info.oid
            );
            return if h.known && !h.other_oids_with_name.contains(&r) {
                Binding::Withhold(why)
            } else {
                Binding::Hold(why)
            };
        }
        None if !h.other_oids_with_name.is_empty() => {
            return Binding::Hold(
                "the table's name belonged to another table before (renamed, swapped or \
                 re-created) and the decision is not bound to a table"
                    .into(),
            );
        }
        _ => {}
    }
    match ce.attnum {
        Some(a) if a != c.attnum => {
            let why = format!(
                "the decision was made for another column of that name (attnum {a}; this column \
                 is attnum {}): dropped and added again, or renamed",
                c.attnum
            );
            if h.known && a > h.max_attnum {
                Binding::Withhold(why)
            } else {
                Binding::Hold(why)
            }
        }
        None if h.recreated_columns.contains(&c.name) => Binding::Hold(
            "the column was dropped and added again and the decision is not bound to a column"
                .into(),
        ),
        _ => Binding::Bound,
    }
}

#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub name: String,
    pub type_name: String,
    pub class: TypeClass,
    /// None = blocked: the column is removed from events and from the dev schema.
    pub action: Option<RuleKey>,
    /// Safe text the in-flight scanner samples.
    pub scan: bool,
    /// The declared length of a `character varying(n)` / `character(n)` column whose rule can
    /// change a value's length (surrogates, e-mails, redaction): the output is cut to it, so
    /// dev holds exactly what was published (a cast would cut it silently on the sink side).
    pub max_chars: Option<usize>,
}

/// `n` of `character varying(n)` / `character(n)` (not of arrays of them).
pub fn declared_length(type_name: &str) -> Option<usize> {
    let rest = type_name
        .strip_prefix("character varying(")
        .or_else(|| type_name.strip_prefix("character("))?;
    rest.strip_suffix(')')?.parse().ok()
}

#[derive(Debug, Clone)]
pub struct TablePlan {
    pub qualified: String,
    pub oid: u32,
    /// The whole table is blocked: its changes are dropped.
    pub blocked: bool,
    /// Every source column, in source order.
    pub columns: Vec<ColumnPlan>,
    /// What dev is told about the table (published columns only).
    pub schema: proto::TableSchema,
    /// Per source column: read from production (published, or the entity of a date shift).
    pub reads: Vec<bool>,
    /// The registry version the plan was made under (a newer registry plans the table again).
    pub registry_version: String,
}

/// Builds the plan of one table, or says why it must not flow.
pub fn plan_table(
    database: &str,
    info: &TableInfo,
    key_columns: &[String],
    registry: &Registry,
    master: &MasterKey,
    scanner: &Arc<Scanner>,
) -> Result<TablePlan, GateError> {
    let table = info.qualified();
    let entry = registry
        .table(&table)
        .ok_or_else(|| GateError::UnclassifiedTable {
            database: database.to_owned(),
            table: table.clone(),
        })?;
    if entry.blocked {
        return Ok(TablePlan {
            qualified: table,
            oid: info.oid,
            blocked: true,
            columns: Vec::new(),
            // The marker the sink empties dev's copy on.
            schema: proto::TableSchema {
                schema: info.schema.clone(),
                name: info.name.clone(),
                blocked: true,
                ..Default::default()
            },
            reads: Vec::new(),
            registry_version: registry.version.clone(),
        });
    }
    // Decisions made for a table that takes this name only later in the WAL (the stream is
    // behind a rename or swap the reviewer already decided): this older table's rows have no
    // decision any more and are withheld — dropped, with no schema event (dev keeps its table).
    let foreign: Vec<u32> = entry
        .columns
        .values()
        .filter(|ce| !matches!(ce.decision, Decision::Blocked))
        .filter_map(|ce| ce.relid)
        .filter(|r| *r != info.oid)
        .collect();
    if !foreign.is_empty()
        && info.history.known
        && foreign
            .iter()
            .all(|r| !info.history.other_oids_with_name.contains(r))
    {
        tracing::warn!(table = %table, oid = info.oid,
            "rows of an older table withheld: the registry decides the table that takes this name later");
        return Ok(TablePlan {
            qualified: table,
            oid: info.oid,
            blocked: true,
            columns: Vec::new(),
            schema: proto::TableSchema::default(),
            reads: Vec::new(),
            registry_version: registry.version.clone(),
        });
    }
    let is_key = |n: &String| key_columns.contains(n) || info.primary_key.contains(n);
    let mut columns = Vec::with_capacity(info.columns.len());
    let mut published = Vec::new();
    for c in &info.columns {
        let ce = entry
            .columns
            .get(&c.name)
            .ok_or_else(|| GateError::UnclassifiedColumn {
                database: database.to_owned(),
                table: table.clone(),
                column: c.name.clone(),
                type_name: c.type_name.clone(),
            })?;
        if ce.type_name != c.type_name {
            return Err(GateError::TypeChanged {
                database: database.to_owned(),
                table: table.clone(),
                column: c.name.clone(),
                registry_type: ce.type_name.clone(),
                actual_type: c.type_name.clone(),
            });
        }
        // A decision that publishes must have been made for this very column; a blocked one
        // stays blocked whatever the column is.
        let mut decision = &ce.decision;
        if !matches!(ce.decision, Decision::Blocked) {
            let rebound = |why: String| GateError::Rebound {
                database: database.to_owned(),
                table: table.clone(),
                column: c.name.clone(),
                type_name: c.type_name.clone(),
                why,
            };
            match binding_problem(ce, info, c) {
                Binding::Bound => {}
                Binding::Hold(why) => return Err(rebound(why)),
                Binding::Withhold(why) if is_key(&c.name) => return Err(rebound(why)),
                Binding::Withhold(why) => {
                    tracing::warn!(table = %table, column = %c.name, reason = %why,
                        "values of an older column withheld: the registry decides the newer column of that name");
                    decision = &Decision::Blocked;
                }
            }
        }
        // A blocked column never needs its type understood (its values are never read).
        let class = match (&c.class, decision) {
            (Some(class), _) => class.clone(),
            (None, Decision::Blocked) => TypeClass::Text,
            (None, _) => {
                return Err(GateError::UnsupportedType {
                    table: table.clone(),
                    column: c.name.clone(),
                    type_name: c.type_name.clone(),
                });
            }
        };
        let column_index = |name: &str| info.columns.iter().position(|c| c.name == name);
        let bind_cx = BindCx {
            master,
            profile: ce.profile,
            column_index: &column_index,
            scanner,
            restricted_zip3: &registry.restricted_zip3,
        };
        let action = match decision {
            Decision::Blocked => {
                // With REPLICA IDENTITY FULL (a table without a primary key) pgoutput marks
                // every column as part of the identity: a blocked column simply does not
                // travel, and the sink matches rows on the published columns.
                let identity = key_columns.contains(&c.name) && info.replica_identity != b'f';
                if identity || info.primary_key.contains(&c.name) {
                    return Err(GateError::BlockedKey {
                        table: table.clone(),
                        column: c.name.clone(),
                    });
                }
                None
            }
            Decision::Publish(rule) => {
                let bound =
                    RuleKey::bind(rule, &class, &bind_cx).map_err(|source| GateError::Rule {
                        table: table.clone(),
                        column: c.name.clone(),
                        source,
                    })?;
                published.push(proto::Column {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    type_oid: c.type_oid,
                    not_null: c.not_null
                        && !matches!(rule, crate::registry::Rule::Scrub { replacement: None }),
                    rule: rule.describe(),
                    profile: ce.profile.name().into(),
                });
                Some(bound)
            }
        };
        let scan = ce.scan
            && matches!(action, Some(RuleKey::Keep))
            && matches!(class, TypeClass::Text | TypeClass::Json | TypeClass::Jsonb);
        let max_chars = match &action {
            Some(RuleKey::Keep) | None => None,
            Some(_) => declared_length(&c.type_name),
        };
        columns.push(ColumnPlan {
            name: c.name.clone(),
            type_name: c.type_name.clone(),
            class,
            action,
            scan,
            max_chars,
        });
    }
    let is_pub = |n: &String| published.iter().any(|c| &c.name == n);
    let all_pub = |cols: &[String]| cols.iter().all(is_pub);
    let schema = proto::TableSchema {
        schema: info.schema.clone(),
        name: info.name.clone(),
        blocked: false,
        columns: published.clone(),
        primary_key: if all_pub(&info.primary_key) {
            info.primary_key.clone()
        } else {
            Vec::new()
        },
        unique_keys: info
            .unique_keys
            .iter()
            .filter(|(_, cols)| all_pub(cols))
            .map(|(name, cols)| proto::UniqueKey {
                name: name.clone(),
                columns: cols.clone(),
            })
            .collect(),
        foreign_keys: info
            .foreign_keys
            .iter()
            .filter(|fk| all_pub(&fk.columns))
            .map(|fk| proto::ForeignKey {
                name: fk.name.clone(),
                columns: fk.columns.clone(),
                ref_table: fk.ref_table.clone(),
                ref_columns: fk.ref_columns.clone(),
            })
            .collect(),
        // The label sets of the enums published columns use (a blocked column's labels are not
        // dev's business).
        enums: info
            .enums
            .iter()
            .filter(|(name, _)| {
                published
                    .iter()
                    .any(|c| c.type_name == **name || c.type_name == format!("{name}[]"))
            })
            .map(|(name, labels)| proto::EnumType {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect(),
        identity: if info.replica_identity == b'i'
            && !key_columns.is_empty()
            && all_pub(key_columns)
        {
            key_columns.to_vec()
        } else {
            Vec::new()
        },
        replica_identity: match info.replica_identity {
            b'f' => "full",
            b'n' => "nothing",
            b'i' => "index",
            _ => "default",
        }
        .into(),
    };
    let mut reads: Vec<bool> = columns.iter().map(|c| c.action.is_some()).collect();
    for c in &columns {
        if let Some(RuleKey::DateShift { entity, .. }) = &c.action {
            reads[*entity] = true;
        }
    }
    Ok(TablePlan {
        qualified: table,
        oid: info.oid,
        blocked: false,
        columns,
        schema,
        reads,
        registry_version: registry.version.clone(),
    })
}

impl TablePlan {
    /// De-identifies one row given as optional text values in source column order.
    /// `Unchanged` entries mark TOASTed values the update did not touch.
    ///
    /// Vault-held tokens come from `store`; a value it does not have yet is pushed onto
    /// `misses` and the returned row is not usable: the caller allocates the misses and calls
    /// again (see [`crate::vault::Vault::allocate`]).
    pub fn transform<'a, I>(
        &self,
        values: I,
        lsn: u64,
        store: &dyn TokenStore,
        misses: &mut Vec<VaultRequest>,
    ) -> Result<Vec<proto::Value>, GateError>
    where
        I: IntoIterator<Item = RowValue<'a>>,
    {
        let values: Vec<RowValue<'a>> = values.into_iter().collect();
        // A row with more or fewer values than the relation has columns is wrong.
        if values.len() != self.columns.len() {
            return Err(GateError::Value {
                table: self.qualified.clone(),
                column: "*".into(),
                type_name: "row".into(),
                lsn: fmt_lsn(lsn),
                problem: format!(
                    "row has {} columns, the relation has {}",
                    values.len(),
                    self.columns.len()
                ),
            });
        }
        // Only what the plan reads is looked at (a blocked column's bytes never are).
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(values.len());
        for ((col, v), read) in self.columns.iter().zip(&values).zip(&self.reads) {
            texts.push(match v {
                RowValue::Text(bytes) if *read => Some(
                    std::str::from_utf8(bytes)
                        .map_err(|_| self.value_err(col, lsn, "value is not valid UTF-8"))?,
                ),
                _ => None,
            });
        }
        let mut out = Vec::with_capacity(self.schema.columns.len());
        let mut cx = Cx {
            store,
            misses,
            row: &texts,
        };
        for ((col, v), text) in self.columns.iter().zip(&values).zip(&texts) {
            let Some(action) = &col.action else { continue };
            let kind = match v {
                RowValue::Null => proto::value::Kind::Null(true),
                RowValue::Unchanged => proto::value::Kind::Unchanged(true),
                RowValue::Text(_) => {
                    let s = text.unwrap_or_default();
                    match tokenize::apply(action, &col.class, s, &mut cx) {
                        Ok(Some(mut t)) => {
                            if let Some(n) = col.max_chars
                                && let Some((cut, _)) = t.char_indices().nth(n)
                            {
                                t.truncate(cut);
                            }
                            proto::value::Kind::Text(t)
                        }
                        Ok(None) => proto::value::Kind::Null(true),
                        Err(e) => return Err(self.value_err(col, lsn, &e.to_string())),
                    }
                }
                RowValue::Binary => {
                    return Err(self.value_err(col, lsn, "binary tuple values are not requested"));
                }
            };
            out.push(proto::Value { kind: Some(kind) });
        }
        Ok(out)
    }

    pub fn transform_tuple(
        &self,
        t: &TupleData,
        lsn: u64,
        store: &dyn TokenStore,
        misses: &mut Vec<VaultRequest>,
    ) -> Result<Vec<proto::Value>, GateError> {
        self.transform(t.0.iter().map(RowValue::from), lsn, store, misses)
    }

    /// The published values of the columns the in-flight scanner samples: (column, value).
    pub fn scanned<'v>(&self, row: &'v [proto::Value]) -> Vec<(&str, &'v str)> {
        self.scanned_iter(row).collect()
    }

    /// [`TablePlan::scanned`] without collecting (the sampler looks at every row).
    pub fn scanned_iter<'s, 'v>(
        &'s self,
        row: &'v [proto::Value],
    ) -> impl Iterator<Item = (&'s str, &'v str)> {
        self.columns
            .iter()
            .filter(|c| c.action.is_some())
            .zip(row)
            .filter(|(c, _)| c.scan)
            .filter_map(|(c, v)| match &v.kind {
                Some(proto::value::Kind::Text(t)) => Some((c.name.as_str(), t.as_str())),
                _ => None,
            })
    }

    /// Published columns whose rule needs the vault.
    pub fn vault_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.action.as_ref().is_some_and(RuleKey::uses_vault))
            .map(|c| c.name.as_str())
            .collect()
    }

    fn value_err(&self, col: &ColumnPlan, lsn: u64, problem: &str) -> GateError {
        GateError::Value {
            table: self.qualified.clone(),
            column: col.name.clone(),
            type_name: col.type_name.clone(),
            lsn: fmt_lsn(lsn),
            problem: problem.to_owned(),
        }
    }
}

/// One source value on its way through the gate.
#[derive(Clone, Copy)]
pub enum RowValue<'a> {
    Null,
    Unchanged,
    Text(&'a [u8]),
    Binary,
}

impl<'a> From<&'a TupleValue> for RowValue<'a> {
    fn from(v: &'a TupleValue) -> Self {
        match v {
            TupleValue::Null => RowValue::Null,
            TupleValue::Unchanged => RowValue::Unchanged,
            TupleValue::Text(b) => RowValue::Text(b),
            TupleValue::Binary(_) => RowValue::Binary,
        }
    }
}

impl<'a> From<&'a Option<Vec<u8>>> for RowValue<'a> {
    fn from(v: &'a Option<Vec<u8>>) -> Self {
        match v {
            None => RowValue::Null,
            Some(s) => RowValue::Text(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::catalog::{ColumnInfo, ShapeHistory};
    use crate::registry::{ColumnEntry, Profile, Rule};

    fn entry(relid: Option<u32>, attnum: Option<i16>) -> ColumnEntry {
        ColumnEntry {
            type_name: "text".into(),
            decision: Decision::Publish(Rule::Keep),
            profile: Profile::SafeHarbor,
            reviewer: None,
            reason: None,
            reviewed_at: None,
            scan: true,
            relid,
            attnum,
        }
    }

    fn table(oid: u32, attnum: i16, history: ShapeHistory) -> (TableInfo, ColumnInfo) {
        let c = ColumnInfo {
            name: "note".into(),
            type_oid: 25,
            type_modifier: -1,
            type_name: "text".into(),
            class: Some(TypeClass::Text),
            not_null: false,
            attnum,
        };
        let info = TableInfo {
            oid,
            schema: "public".into(),
            name: "t".into(),
            replica_identity: b'd',
            columns: vec![c.clone()],
            primary_key: vec![],
            identity_index: vec![],
            unique_keys: vec![],
            foreign_keys: vec![],
            enums: Default::default(),
            history,
        };
        (info, c)
    }

    #[test]
    fn a_decision_binds_to_the_table_and_column_it_was_made_for() {
        let known = |max_attnum: i16, others: &[u32], recreated: &[&str]| ShapeHistory {
            known: true,
            other_oids_with_name: others.iter().copied().collect(),
            recreated_columns: recreated.iter().map(|s| s.to_string()).collect(),
            max_attnum,
        };
        let check = |e: ColumnEntry, oid: u32, attnum: i16, h: ShapeHistory| {
            let (info, c) = table(oid, attnum, h);
            binding_problem(&e, &info, &c)
        };
        // Made for this column.
        assert_eq!(
            check(entry(Some(10), Some(2)), 10, 2, known(2, &[], &[])),
            Binding::Bound
        );
        // An older column of that name (dropped, added again): hold.
        assert!(matches!(
            check(entry(Some(10), Some(2)), 10, 4, known(4, &[], &["note"])),
            Binding::Hold(_)
        ));
        // A column added later than the decoded position: the older one is withheld.
        assert!(matches!(
            check(entry(Some(10), Some(4)), 10, 2, known(2, &[], &[])),
            Binding::Withhold(_)
        ));
        // Without the shape log nothing is placed in time: hold.
        assert!(matches!(
            check(entry(Some(10), Some(4)), 10, 2, ShapeHistory::default()),
            Binding::Hold(_)
        ));
        // Another table that carried the name before: hold; one that takes it later: withhold.
        assert!(matches!(
            check(entry(Some(11), Some(2)), 10, 2, known(2, &[11], &[])),
            Binding::Hold(_)
        ));
        assert!(matches!(
            check(entry(Some(11), Some(2)), 10, 2, known(2, &[], &[])),
            Binding::Withhold(_)
        ));
        // Unbound lines: by name, unless the log says the name meant something else.
        assert_eq!(
            check(entry(None, None), 10, 2, ShapeHistory::default()),
            Binding::Bound
        );
        assert!(matches!(
            check(entry(None, None), 10, 4, known(4, &[], &["note"])),
            Binding::Hold(_)
        ));
        assert!(matches!(
            check(entry(None, None), 10, 2, known(2, &[9], &[])),
            Binding::Hold(_)
        ));
    }
}
