//! Reads table definitions from the production catalog: columns and their types (spelled by
//! `format_type` with an empty search_path, so non-catalog types come schema-qualified), primary
//! and unique keys, foreign keys and enum labels. Relation messages alone lack constraints, so
//! schema events are built from here. Also orders tables parents-before-children for the
//! snapshot, detecting FK cycles instead of looping on them.

use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog query failed ({what}): {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("relation oid {0} not found in the catalog")]
    Missing(u32),
}

fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
    move |source| CatalogError::Query { what, source }
}

impl crate::error::Classify for CatalogError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            CatalogError::Query { what, source } => {
                crate::pg::errors::PgError::new(*what, source).class()
            }
            CatalogError::Missing(_) => crate::error::ErrorClass::Definite,
        }
    }
}

/// The value types veil knows how to carry and transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeClass {
    Bool,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    /// text, varchar, bpchar, name, "char"
    Text,
    Date,
    Timestamp,
    Timestamptz,
    Time,
    Timetz,
    Interval,
    Uuid,
    Bytea,
    Json,
    Jsonb,
    Enum,
    Array(Box<TypeClass>),
}

impl TypeClass {
    /// Classifies a base type by OID.
    pub fn from_oid(oid: u32) -> Option<Self> {
        Some(match oid {
            16 => TypeClass::Bool,
            17 => TypeClass::Bytea,
            18 | 19 | 25 | 1042 | 1043 => TypeClass::Text,
            20 => TypeClass::Int8,
            21 => TypeClass::Int2,
            23 => TypeClass::Int4,
            114 => TypeClass::Json,
            700 => TypeClass::Float4,
            701 => TypeClass::Float8,
            1082 => TypeClass::Date,
            1083 => TypeClass::Time,
            1114 => TypeClass::Timestamp,
            1184 => TypeClass::Timestamptz,
            1186 => TypeClass::Interval,
            1266 => TypeClass::Timetz,
            1700 => TypeClass::Numeric,
            2950 => TypeClass::Uuid,
            3802 => TypeClass::Jsonb,
            _ => return None,
        })
    }

    pub fn name(&self) -> String {
        match self {
            TypeClass::Array(e) => format!("{}[]", e.name()),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// `format_type` spelling, e.g. `character varying(40)`, `public.visit_kind[]`.
    pub type_name: String,
    /// None = a type veil does not support (the gate stops on it).
    pub class: Option<TypeClass>,
    pub not_null: bool,
    /// The column's attribute number: as the shape log had it at the decoded position when
    /// known ([`bind_to_shape_log`]), else the catalog's now; 0 when neither knows the name.
    pub attnum: i16,
}

/// What setup's shape log (`_veil.shapes`, written by the DDL event trigger) says about a
/// table up to a WAL position: decisions are bound to the table and column they were made for
/// (oid, attnum), and a name that meant another table or column before is told apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShapeHistory {
    /// The log had a shape of this table at or before the position.
    pub known: bool,
    /// Other tables (oids) that carried this table's name at or before the position: renamed,
    /// swapped or re-created.
    pub other_oids_with_name: BTreeSet<u32>,
    /// Columns whose name carried another attnum before (dropped and added again).
    pub recreated_columns: BTreeSet<String>,
    /// The highest attnum the table had at or before the position (attnums only grow: a larger
    /// one belongs to a column added later).
    pub max_attnum: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyInfo {
    pub name: String,
    pub columns: Vec<String>,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `d`, `n`, `f` or `i`.
    pub replica_identity: u8,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    /// The columns of the index a `REPLICA IDENTITY USING INDEX` names (empty otherwise).
    pub identity_index: Vec<String>,
    pub unique_keys: Vec<(String, Vec<String>)>,
    pub foreign_keys: Vec<ForeignKeyInfo>,
    /// Enum types used by the columns: qualified name → labels in sort order.
    pub enums: BTreeMap<String, Vec<String>>,
    /// The shape log's history of this table (empty until [`bind_to_shape_log`]).
    pub history: ShapeHistory,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The key columns as a Relation message would flag them: the index's columns for
    /// `REPLICA IDENTITY USING INDEX`, else the primary key.
    pub fn identity_keys(&self) -> Vec<String> {
        match self.replica_identity {
            b'i' => self.identity_index.clone(),
            _ => self.primary_key.clone(),
        }
    }
}

/// Makes every later `format_type` on this connection schema-qualify non-catalog types.
pub async fn prepare_session(client: &Client) -> Result<(), CatalogError> {
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(q("set search_path"))
}

/// Type names and classes for (oid, typmod) pairs, in order.
pub async fn describe_types(
    client: &Client,
    types: &[(u32, i32)],
) -> Result<Vec<(String, Option<TypeClass>, Option<u32>)>, CatalogError> {
    let oids: Vec<u32> = types.iter().map(|t| t.0).collect();
    let mods: Vec<i32> = types.iter().map(|t| t.1).collect();
    let rows = client
        .query(
            "SELECT format_type(x.oid, x.typmod), t.typtype::text, t.typcategory::text, t.typelem, \
                    et.typtype::text \
             FROM unnest($1::pg_catalog.oid[], $2::pg_catalog.int4[]) WITH ORDINALITY AS x(oid, typmod, ord) \
             LEFT JOIN pg_catalog.pg_type t ON t.oid = x.oid \
             LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem \
             ORDER BY x.ord",
            &[&oids, &mods],
        )
        .await
        .map_err(q("describe types"))?;
    // One row per type asked for (a LEFT JOIN: a type dropped since is an unsupported type of
    // its own, never a shift of every later column onto the wrong type).
    let mut out = Vec::with_capacity(rows.len());
    for (row, (oid, _)) in rows.iter().zip(types) {
        let Some(typtype) = row.get::<_, Option<String>>(1) else {
            out.push((format!("dropped type (oid {oid})"), None, None));
            continue;
        };
        let name: String = row
            .get::<_, Option<String>>(0)
            .unwrap_or_else(|| format!("type oid {oid}"));
        let category: String = row.get(2);
        let elem: u32 = row.get(3);
        let elem_typtype: Option<String> = row.get(4);
        let (class, enum_oid) = if typtype == "e" {
            (Some(TypeClass::Enum), Some(*oid))
        } else if category == "A" && elem != 0 {
            if elem_typtype.as_deref() == Some("e") {
                (
                    Some(TypeClass::Array(Box::new(TypeClass::Enum))),
                    Some(elem),
                )
            } else {
                (
                    TypeClass::from_oid(elem).map(|e| TypeClass::Array(Box::new(e))),
                    None,
                )
            }
        } else if typtype == "b" {
            (TypeClass::from_oid(*oid), None)
        } else {
            (None, None)
        };
        out.push((name, class, enum_oid));
    }
    Ok(out)
}

/// A table as a Relation message describes it, for a table dropped before veil decoded its
/// changes: the catalog's definition when the table still exists, else what the message says
/// (name, replica identity, columns and their types, key columns) — no unique or foreign keys.
pub async fn describe_relation(
    client: &Client,
    oid: u32,
    schema: &str,
    name: &str,
    replica_identity: u8,
    columns: &[(String, u32, i32)],
    keys: &[String],
) -> Result<TableInfo, CatalogError> {
    match describe_table(client, oid, Some(columns)).await {
        Err(CatalogError::Missing(_)) => {}
        other => return other,
    }
    let (cols, _) = typed_columns(client, columns, &BTreeSet::new(), &BTreeMap::new()).await?;
    Ok(TableInfo {
        oid,
        schema: schema.to_owned(),
        name: name.to_owned(),
        replica_identity,
        columns: cols,
        // The default identity is the primary key.
        primary_key: if replica_identity == b'd' {
            keys.to_vec()
        } else {
            Vec::new()
        },
        identity_index: if replica_identity == b'i' {
            keys.to_vec()
        } else {
            Vec::new()
        },
        unique_keys: Vec::new(),
        foreign_keys: Vec::new(),
        enums: BTreeMap::new(),
        history: ShapeHistory::default(),
    })
}

/// Columns (name, type oid, typmod) with their types described, and the enum types they use.
async fn typed_columns(
    client: &Client,
    cols: &[(String, u32, i32)],
    not_null: &BTreeSet<String>,
    attnums: &BTreeMap<String, i16>,
) -> Result<(Vec<ColumnInfo>, Vec<u32>), CatalogError> {
    let types =
        describe_types(client, &cols.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>()).await?;
    let mut enum_oids = Vec::new();
    let columns = cols
        .iter()
        .zip(types)
        .map(|((n, oid, typmod), (type_name, class, enum_oid))| {
            if let Some(e) = enum_oid {
                enum_oids.push(e);
            }
            ColumnInfo {
                name: n.clone(),
                type_oid: *oid,
                type_modifier: *typmod,
                type_name,
                class,
                not_null: not_null.contains(n),
                attnum: attnums.get(n).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok((columns, enum_oids))
}

/// Reads one table's definition. `columns` overrides the catalog's column list (name, type oid,
/// typmod) when it comes from a Relation message.
pub async fn describe_table(
    client: &Client,
    oid: u32,
    columns: Option<&[(String, u32, i32)]>,
) -> Result<TableInfo, CatalogError> {
    let rel = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(q("describe relation"))?
        .ok_or(CatalogError::Missing(oid))?;
    let schema: String = rel.get(0);
    let name: String = rel.get(1);
    let replica_identity = rel.get::<_, String>(2).bytes().next().unwrap_or(b'd');
    let attrs = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull, a.attnum FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(q("describe columns"))?;
    let not_null: BTreeSet<String> = attrs
        .iter()
        .filter(|r| r.get::<_, bool>(3))
        .map(|r| r.get::<_, String>(0))
        .collect();
    let attnums: BTreeMap<String, i16> = attrs
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i16>(4)))
        .collect();
    let cols: Vec<(String, u32, i32)> = match columns {
        Some(c) => c.to_vec(),
        None => attrs
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
    };
    let (columns, enum_oids) = typed_columns(client, &cols, &not_null, &attnums).await?;
    let cons = client
        .query(
            "SELECT con.conname::text, con.contype::text, \
               ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o) \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o), \
               (SELECT rn.nspname || '.' || rc.relname FROM pg_catalog.pg_class rc \
                     JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace WHERE rc.oid = con.confrelid), \
               ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o) \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o) \
             FROM pg_catalog.pg_constraint con WHERE con.conrelid = $1 AND con.contype IN ('p','u','f') \
             ORDER BY con.conname",
            &[&oid],
        )
        .await
        .map_err(q("describe constraints"))?;
    let mut primary_key = Vec::new();
    let mut unique_keys = Vec::new();
    let mut foreign_keys = Vec::new();
    for r in cons {
        let cname: String = r.get(0);
        let kind: String = r.get(1);
        let cols: Vec<String> = r.get(2);
        match kind.as_str() {
            "p" => primary_key = cols,
            "u" => unique_keys.push((cname, cols)),
            _ => foreign_keys.push(ForeignKeyInfo {
                name: cname,
                columns: cols,
                ref_table: r.get::<_, Option<String>>(3).unwrap_or_default(),
                ref_columns: r.get(4),
            }),
        }
    }
    let identity_index: Vec<String> = if replica_identity == b'i' {
        client
            .query_one(
                "SELECT ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i \
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(n, o) \
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n \
                 WHERE i.indrelid = $1 AND i.indisreplident ORDER BY k.o)",
                &[&oid],
            )
            .await
            .map_err(q("describe replica identity index"))?
            .get(0)
    } else {
        Vec::new()
    };
    let mut enums = BTreeMap::new();
    if !enum_oids.is_empty() {
        let rows = client
            .query(
                "SELECT format_type(t.oid, NULL), array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
                 FROM pg_catalog.pg_enum e JOIN pg_catalog.pg_type t ON t.oid = e.enumtypid \
                 WHERE t.oid = ANY($1) GROUP BY t.oid",
                &[&enum_oids],
            )
            .await
            .map_err(q("describe enums"))?;
        for r in rows {
            enums.insert(r.get(0), r.get(1));
        }
    }
    Ok(TableInfo {
        oid,
        schema,
        name,
        replica_identity,
        columns,
        primary_key,
        identity_index,
        unique_keys,
        foreign_keys,
        enums,
        history: ShapeHistory::default(),
    })
}

/// Binds a described table to the shape log up to WAL position `lsn` (`None`: up to now):
/// each column's attnum as it was then, and the history of the table's name and columns.
/// Without a log (setup not run since this version, or a crash emptied it — the log is an
/// unlogged table, never published), the catalog's attnums stand and the history is unknown.
///
/// `from_catalog`: the columns came from the catalog as it is now, which may be ahead of `lsn`;
/// columns the log does not have at `lsn` did not exist yet and are left out. Otherwise (a
/// Relation message's columns, which did exist) such a column keeps the catalog's attnum.
pub async fn bind_to_shape_log(
    client: &Client,
    info: &mut TableInfo,
    lsn: Option<u64>,
    from_catalog: bool,
) -> Result<(), CatalogError> {
    // Asked first, never by a failing query: the snapshot reads inside its transaction.
    let has_log: bool = client
        .query_one("SELECT to_regclass('_veil.shapes') IS NOT NULL", &[])
        .await
        .map_err(q("look up the shape log"))?
        .get(0);
    if !has_log {
        return Ok(());
    }
    let upto = crate::pg::lsn::fmt_lsn(lsn.unwrap_or(u64::MAX));
    // The table's own shapes up to the position: its name and columns then.
    let own = client
        .query(
            "SELECT nsp, rel, columns::text FROM _veil.shapes \
             WHERE relid = $1 AND lsn <= $2::text::pg_lsn ORDER BY lsn, id",
            &[&info.oid, &upto],
        )
        .await
        .map_err(q("read the shape log"))?;
    let mut last: Option<BTreeMap<String, i16>> = None;
    let mut seen: BTreeMap<String, BTreeSet<i16>> = BTreeMap::new();
    for r in &own {
        let text: String = r.get(2);
        let cols: Vec<(i16, String)> = serde_json::from_str(&text).unwrap_or_default();
        for (n, name) in &cols {
            seen.entry(name.clone()).or_default().insert(*n);
            info.history.max_attnum = info.history.max_attnum.max(*n);
        }
        last = Some(cols.into_iter().map(|(n, name)| (name, n)).collect());
        // The name the table had then (the catalog may already show a later rename).
        info.schema = r.get(0);
        info.name = r.get(1);
    }
    tracing::debug!(oid = info.oid, upto = %upto, shapes = own.len(), "bound to the shape log");
    let Some(shape) = last else {
        return Ok(());
    };
    info.history.known = true;
    info.history.recreated_columns = seen
        .into_iter()
        .filter(|(_, ns)| ns.len() > 1)
        .map(|(name, _)| name)
        .collect();
    // Which other tables carried that name before?
    info.history.other_oids_with_name = client
        .query(
            "SELECT DISTINCT relid FROM _veil.shapes WHERE nsp = $1 AND rel = $2 AND relid <> $3 \
             AND lsn <= $4::text::pg_lsn",
            &[&info.schema, &info.name, &info.oid, &upto],
        )
        .await
        .map_err(q("read the shape log"))?
        .iter()
        .map(|r| r.get::<_, u32>(0))
        .collect();
    if from_catalog {
        info.columns.retain(|c| shape.contains_key(&c.name));
    }
    for c in &mut info.columns {
        if let Some(n) = shape.get(&c.name) {
            c.attnum = *n;
        }
    }
    Ok(())
}

/// OIDs of the tables in a publication.
pub async fn publication_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<u32>, CatalogError> {
    let rows = client
        .query(
            "SELECT c.oid FROM pg_catalog.pg_publication_tables pt \
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = $1 ORDER BY pt.schemaname, pt.tablename",
            &[&publication],
        )
        .await
        .map_err(q("list publication tables"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Orders tables so that every table comes after the tables it references. Tables on an FK
/// cycle cannot be ordered; they come last (by name) and are returned in the second list.
pub fn fk_order(tables: &[TableInfo]) -> (Vec<usize>, Vec<String>) {
    let index: BTreeMap<String, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.qualified(), i))
        .collect();
    let mut deps: Vec<BTreeSet<usize>> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.foreign_keys
                .iter()
                .filter_map(|fk| index.get(&fk.ref_table).copied())
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    let mut order = Vec::with_capacity(tables.len());
    let mut done = vec![false; tables.len()];
    loop {
        let ready: Vec<usize> = (0..tables.len())
            .filter(|&i| !done[i] && deps[i].is_empty())
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            done[i] = true;
            order.push(i);
            for d in deps.iter_mut() {
                d.remove(&i);
            }
        }
    }
    let mut cyclic: Vec<usize> = (0..tables.len()).filter(|&i| !done[i]).collect();
    cyclic.sort_by_key(|&i| tables[i].qualified());
    let names = cyclic.iter().map(|&i| tables[i].qualified()).collect();
    order.extend(cyclic);
    (order, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, refs: &[&str]) -> TableInfo {
        TableInfo {
            oid: 0,
            schema: "public".into(),
            name: name.into(),
            replica_identity: b'd',
            columns: vec![],
            history: ShapeHistory::default(),
            primary_key: vec![],
            identity_index: vec![],
            unique_keys: vec![],
            foreign_keys: refs
                .iter()
                .map(|r| ForeignKeyInfo {
                    name: format!("fk_{r}"),
                    columns: vec![],
                    ref_table: format!("public.{r}"),
                    ref_columns: vec![],
                })
                .collect(),
            enums: BTreeMap::new(),
        }
    }

    #[test]
    fn parents_first_and_cycles_detected() {
        let tables = vec![
            t("obs", &["enc"]),
            t("enc", &["patients", "providers"]),
            t("patients", &["patients"]),
            t("providers", &[]),
            t("a", &["b"]),
            t("b", &["a"]),
        ];
        let (order, cyclic) = fk_order(&tables);
        let names: Vec<_> = order.iter().map(|&i| tables[i].name.as_str()).collect();
        let pos = |n| names.iter().position(|x| *x == n).unwrap();
        assert!(
            pos("patients") < pos("enc")
                && pos("providers") < pos("enc")
                && pos("enc") < pos("obs")
        );
        assert_eq!(cyclic, vec!["public.a", "public.b"]);
        assert_eq!(order.len(), 6);
    }
}
