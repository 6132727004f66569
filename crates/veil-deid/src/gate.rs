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
        // A blocked column never needs its type understood (its values are never read).
        let class = match (&c.class, &ce.decision) {
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
        let action = match &ce.decision {
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
        enums: info
            .enums
            .iter()
            .map(|(name, labels)| proto::EnumType {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect(),
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
        self.columns
            .iter()
            .filter(|c| c.action.is_some())
            .zip(row)
            .filter(|(c, _)| c.scan)
            .filter_map(|(c, v)| match &v.kind {
                Some(proto::value::Kind::Text(t)) => Some((c.name.as_str(), t.as_str())),
                _ => None,
            })
            .collect()
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
