//! Dev-side DDL from schema events: tables with their keys, enums, columns added, altered,
//! cleared or dropped when a rule changes, foreign keys once both ends exist; and the
//! bookkeeping schema `veil_sink`.

use prost::Message as _;
use std::sync::Arc;

use super::applier::{Applier, Next};
use super::error::{SinkError, pg};
use crate::proto;

impl Applier {
    pub(super) async fn apply_schema(&mut self, s: proto::TableSchema) -> Result<(), SinkError> {
        self.drain().await?;
        let q = format!("{}.{}", s.schema, s.name);
        if s.blocked {
            return self.empty_blocked(&q).await;
        }
        let table = crate::pg::quote::qualified(&q);
        let serr = |message: String| SinkError::Schema {
            table: q.clone(),
            message,
        };
        let mut sql = String::new();
        // Key columns whose rule changed: (column, rule before, rule after).
        let mut key_reruled: Vec<(String, String, String)> = Vec::new();
        for e in &s.enums {
            let labels: Vec<String> = e
                .labels
                .iter()
                .map(|l| crate::pg::quote::literal(l))
                .collect();
            let (es, en) = e.name.split_once('.').unwrap_or(("public", &e.name));
            sql.push_str(&format!(
                "DO $veil$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE n.nspname = {} AND t.typname = {}) THEN CREATE SCHEMA IF NOT EXISTS {}; CREATE TYPE {} AS ENUM ({}); END IF; END $veil$;\n",
                crate::pg::quote::literal(es.trim_matches('"')),
                crate::pg::quote::literal(en.trim_matches('"')),
                crate::pg::quote::ident(es.trim_matches('"')),
                e.name,
                labels.join(", ")
            ));
            // Labels of a type dev already has are never added here: a label added inside
            // this transaction could not be used in it (55P04). The enum event, or the first
            // row that carries an unseen label, adds them in a transaction of their own.
        }
        match self.schemas.get(&q) {
            None => {
                let mut cols: Vec<String> = s
                    .columns
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}{}",
                            crate::pg::quote::ident(&c.name),
                            c.type_name,
                            if c.not_null { " NOT NULL" } else { "" }
                        )
                    })
                    .collect();
                if !s.primary_key.is_empty() {
                    let pk: Vec<String> = s
                        .primary_key
                        .iter()
                        .map(|c| crate::pg::quote::ident(c))
                        .collect();
                    cols.push(format!("PRIMARY KEY ({})", pk.join(", ")));
                }
                for u in &s.unique_keys {
                    let uc: Vec<String> = u
                        .columns
                        .iter()
                        .map(|c| crate::pg::quote::ident(c))
                        .collect();
                    cols.push(format!(
                        "CONSTRAINT {} UNIQUE ({})",
                        crate::pg::quote::ident(&u.name),
                        uc.join(", ")
                    ));
                }
                sql.push_str(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {};\nCREATE TABLE {} ({});\n",
                    crate::pg::quote::ident(&s.schema),
                    table,
                    cols.join(", ")
                ));
                tracing::info!(table = %q, columns = s.columns.len(), "creating dev table");
            }
            Some(old) => {
                let enum_ddl = sql.len();
                for c in &s.columns {
                    match old.columns.iter().find(|o| o.name == c.name) {
                        None => sql.push_str(&format!(
                            "ALTER TABLE {} ADD COLUMN {} {};\n",
                            table,
                            crate::pg::quote::ident(&c.name),
                            c.type_name
                        )),
                        Some(o) => {
                            let retyped = o.type_name != c.type_name;
                            let reruled = o.rule != c.rule || o.profile != c.profile;
                            if reruled {
                                // Reclassified: what dev holds was made under the old rule
                                // (perhaps kept as is). Clear it — before a type change too, which
                                // would otherwise carry the old values over — and new changes
                                // arrive under the new rule.
                                let key = s.primary_key.contains(&c.name)
                                    || s.unique_keys.iter().any(|u| u.columns.contains(&c.name))
                                    || s.foreign_keys.iter().any(|f| f.columns.contains(&c.name));
                                if key {
                                    // A key's values change under the new rule: dev's rows of
                                    // this table are deleted (below), and the backfill the
                                    // decision starts brings them back under it — no new epoch
                                    // of the whole database. Rows of other tables keep their
                                    // references (dev applies as a replica) until their own
                                    // columns' decisions refill them.
                                    key_reruled.push((
                                        c.name.clone(),
                                        o.rule.clone(),
                                        c.rule.clone(),
                                    ));
                                } else {
                                    tracing::warn!(
                                        table = %q,
                                        column = %c.name,
                                        from = %o.rule,
                                        to = %c.rule,
                                        "column reclassified: clearing what dev holds of it (set to NULL)"
                                    );
                                    sql.push_str(&format!(
                                    "ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL;\nUPDATE {t} SET {c} = NULL;\n",
                                    t = table,
                                    c = crate::pg::quote::ident(&c.name)
                                ));
                                    self.reclassified.push(proto::Reclassified {
                                        table: q.clone(),
                                        column: c.name.clone(),
                                        rule_before: o.rule.clone(),
                                        rule_after: c.rule.clone(),
                                        action: "cleared".into(),
                                        rows: 0,
                                    });
                                }
                            }
                            if retyped {
                                sql.push_str(&format!(
                                    "ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty} USING {c}::text::{ty};\n",
                                    t = table,
                                    c = crate::pg::quote::ident(&c.name),
                                    ty = c.type_name
                                ));
                            }
                        }
                    }
                }
                for o in &old.columns {
                    if !s.columns.iter().any(|c| c.name == o.name) {
                        self.reclassified.push(proto::Reclassified {
                            table: q.clone(),
                            column: o.name.clone(),
                            rule_before: o.rule.clone(),
                            rule_after: "blocked or dropped".into(),
                            action: "dropped".into(),
                            rows: 0,
                        });
                        sql.push_str(&format!(
                            "ALTER TABLE {} DROP COLUMN {};\n",
                            table,
                            crate::pg::quote::ident(&o.name)
                        ));
                    }
                }
                if sql.len() > enum_ddl {
                    tracing::info!(table = %q, "altering dev table");
                }
            }
        }
        if !key_reruled.is_empty() {
            let rows = self
                .client
                .execute(&format!("DELETE FROM {table}"), &[])
                .await
                .map_err(|e| {
                    serr(pg("empty the table whose key was reclassified")(e).to_string())
                })?;
            for (column, before, after) in key_reruled {
                tracing::warn!(table = %q, column = %column, from = %before, to = %after, rows,
                               "key column reclassified: dev's copy deleted; the backfill the decision starts refills it");
                self.reclassified.push(proto::Reclassified {
                    table: q.clone(),
                    column,
                    rule_before: before,
                    rule_after: after,
                    action: "emptied for backfill".into(),
                    rows,
                });
            }
        }
        if !sql.is_empty() {
            self.client
                .batch_execute(&sql)
                .await
                .map_err(|e| serr(pg("ddl")(e).to_string()))?;
        }
        for fk in &s.foreign_keys {
            self.client
                .execute(
                    "INSERT INTO veil_sink.pending_fks (qualified, name, fk_pb) VALUES ($1, $2, $3) \
                     ON CONFLICT (qualified, name) DO NOTHING",
                    &[&q, &fk.name, &fk.encode_to_vec()],
                )
                .await
                .map_err(pg("record pending fk"))?;
        }
        super::store::save_schema(&self.client, "veil_sink.tables", &q, &s).await?;
        let prefix = format!("{q}\u{0}");
        self.stmts.retain(|k, _| !k.starts_with(&prefix));
        self.shapes.retain(|k, _| !k.starts_with(&prefix));
        self.schemas.insert(q, Arc::new(s));
        // Outside the snapshot, add foreign keys as soon as both ends exist.
        self.add_pending_fks().await
    }

    /// An enum's label set changed in production: the labels dev lacks are added in their
    /// order, in a transaction of their own after what precedes is committed; the open source
    /// transaction is set aside and read again.
    pub(super) async fn enum_labels(
        &mut self,
        e: proto::EnumType,
        offset: i64,
    ) -> Result<Next, SinkError> {
        let Some(have) = self.dev_labels(&e.name).await? else {
            // Dev has no such type yet: the schema that creates it carries its labels.
            return Ok(Next::Continue);
        };
        if e.labels.iter().all(|l| have.contains(l)) {
            return Ok(Next::Continue);
        }
        self.add_labels_and_reread(e, offset, true).await
    }

    /// The labels of an enum type in dev, in order (`None`: dev has no such type). Cached: the
    /// per-row check reads them without a copy.
    async fn dev_labels(&mut self, name: &str) -> Result<Option<&[String]>, SinkError> {
        if !self.enum_cache.contains_key(name) {
            let row = self
                .client
                .query_one(
                    "SELECT to_regtype($1)::oid, ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e \
                     WHERE e.enumtypid = to_regtype($1) ORDER BY e.enumsortorder)",
                    &[&name],
                )
                .await
                .map_err(pg("read enum labels"))?;
            if row.get::<_, Option<u32>>(0).is_none() {
                return Ok(None);
            }
            self.enum_cache.insert(name.to_owned(), row.get(1));
        }
        Ok(self.enum_cache.get(name).map(Vec::as_slice))
    }

    /// A label of an enum column that dev's type does not have (a row written after `ALTER
    /// TYPE … ADD VALUE` whose enum event dev never saw): the type and the label set to reach —
    /// the schema's, which the stream keeps current, with the unseen label appended if even that
    /// lacks it. The label is never logged.
    pub(super) async fn unknown_enum_label(
        &mut self,
        r: &proto::RowChange,
    ) -> Result<Option<proto::EnumType>, SinkError> {
        let Some(schema) = self.schemas.get(&r.table).cloned() else {
            return Ok(None);
        };
        if schema.enums.is_empty() {
            return Ok(None);
        }
        for (i, c) in schema.columns.iter().enumerate() {
            let (base, array) = match c.type_name.strip_suffix("[]") {
                Some(b) => (b, true),
                None => (c.type_name.as_str(), false),
            };
            let Some(e) = schema.enums.iter().find(|e| e.name == base) else {
                continue;
            };
            for v in [r.new_values.get(i), r.old_values.get(i)]
                .into_iter()
                .flatten()
            {
                let Some(proto::value::Kind::Text(t)) = &v.kind else {
                    continue;
                };
                let values = if array {
                    array_elements(t)
                } else {
                    vec![t.clone()]
                };
                let Some(have) = self.dev_labels(base).await? else {
                    continue;
                };
                if let Some(unseen) = values.into_iter().find(|l| !have.contains(l)) {
                    tracing::warn!(table = %r.table, column = %c.name, r#type = %base,
                        "a row carries an enum label dev lacks; adding it in a transaction of its own");
                    let mut labels = e.labels.clone();
                    if !labels.contains(&unseen) {
                        labels.push(unseen);
                    }
                    return Ok(Some(proto::EnumType {
                        name: base.to_owned(),
                        labels,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Commits what precedes the open source transaction (set aside), adds the labels in a
    /// transaction of their own, and says where to read again.
    pub(super) async fn add_labels_and_reread(
        &mut self,
        e: proto::EnumType,
        offset: i64,
        renames: bool,
    ) -> Result<Next, SinkError> {
        let reread =
            match self.src {
                Some(_) => Some(self.abandon_open_txn().await?.ok_or_else(|| {
                    SinkError::Schema {
                        table: e.name.clone(),
                        message:
                            "enum labels to add inside a source transaction whose start is unknown"
                                .into(),
                    }
                })?),
                // Outside a source transaction (a snapshot row): this event is read again, from
                // its first piece if it came in fragments.
                None => {
                    let start = self.joiner.started_at.min(offset);
                    self.ckpt.offset = start - 1;
                    self.ckpt.seq = self.ckpt.seq.saturating_sub(1);
                    Some(start)
                }
            };
        self.flush().await?;
        self.ensure_labels(&e, renames).await?;
        Ok(reread.map_or(Next::Continue, Next::ReadFrom))
    }

    /// Adds (or renames, for `RENAME VALUE`) the labels dev's type lacks, each placed after the
    /// label it follows in `e` — outside any dev transaction, so each commits at once.
    /// `renames`: only an enum event's label set is complete and current; a row's fallback set
    /// (the schema's, perhaps older than dev's type) only ever adds.
    async fn ensure_labels(&mut self, e: &proto::EnumType, renames: bool) -> Result<(), SinkError> {
        debug_assert!(!self.in_dev_txn());
        self.enum_cache.remove(&e.name);
        let Some(mut have) = self.dev_labels(&e.name).await?.map(<[String]>::to_vec) else {
            return Ok(());
        };
        let lit = |l: &str| crate::pg::quote::literal(l);
        let serr = |what: &str, err: tokio_postgres::Error| SinkError::Schema {
            table: e.name.clone(),
            message: pg(what.to_owned())(err).to_string(),
        };
        // Labels production renamed: dev's labels production no longer has, paired in order with
        // the new ones (enum labels are never dropped in PostgreSQL).
        let gone: Vec<String> = have
            .iter()
            .filter(|l| !e.labels.contains(l))
            .cloned()
            .collect();
        let new: Vec<String> = e
            .labels
            .iter()
            .filter(|l| !have.contains(l))
            .cloned()
            .collect();
        if renames && !gone.is_empty() && gone.len() <= new.len() {
            for (old, to) in gone.iter().zip(&new) {
                self.client
                    .batch_execute(&format!(
                        "ALTER TYPE {} RENAME VALUE {} TO {}",
                        e.name,
                        lit(old),
                        lit(to)
                    ))
                    .await
                    .map_err(|err| serr("rename enum label", err))?;
                if let Some(h) = have.iter_mut().find(|h| *h == old) {
                    *h = to.clone();
                }
            }
        }
        for (i, l) in e.labels.iter().enumerate() {
            if have.contains(l) {
                continue;
            }
            let place = match e.labels[..i].iter().rev().find(|p| have.contains(p)) {
                Some(prev) => format!(" AFTER {}", lit(prev)),
                None => match e.labels[i + 1..].iter().find(|n| have.contains(n)) {
                    Some(next) => format!(" BEFORE {}", lit(next)),
                    None => String::new(),
                },
            };
            self.client
                .batch_execute(&format!(
                    "ALTER TYPE {} ADD VALUE IF NOT EXISTS {}{place}",
                    e.name,
                    lit(l)
                ))
                .await
                .map_err(|err| serr("add enum label", err))?;
            have.push(l.clone());
        }
        self.enum_cache.remove(&e.name);
        tracing::info!(r#type = %e.name, labels = e.labels.len(), "enum labels added in dev");
        Ok(())
    }

    /// The registry blocked the whole table: dev deletes every row it holds of it, in the
    /// batch's transaction (so with the checkpoint), and the audit says how many. The table and
    /// its columns stay (names are not values); changes arrive again only after an unblock, and
    /// dev starts that table empty until backfill.
    async fn empty_blocked(&mut self, q: &str) -> Result<(), SinkError> {
        if !self.schemas.contains_key(q) {
            tracing::info!(table = %q, "table blocked by the registry; dev holds nothing of it");
            return Ok(());
        }
        let rows = self
            .client
            .execute(
                &format!("DELETE FROM {}", crate::pg::quote::qualified(q)),
                &[],
            )
            .await
            .map_err(|e| SinkError::Schema {
                table: q.to_owned(),
                message: pg("empty the blocked table")(e).to_string(),
            })?;
        tracing::warn!(table = %q, rows, "table blocked by the registry: dev's copy deleted");
        self.reclassified.push(proto::Reclassified {
            table: q.to_owned(),
            column: "*".into(),
            rule_before: "published".into(),
            rule_after: "blocked".into(),
            action: "emptied".into(),
            rows,
        });
        Ok(())
    }

    pub(super) async fn add_pending_fks(&mut self) -> Result<(), SinkError> {
        let rows = self
            .client
            .query(
                "SELECT qualified, name, fk_pb FROM veil_sink.pending_fks",
                &[],
            )
            .await
            .map_err(pg("read pending fks"))?;
        for r in rows {
            let q: String = r.get(0);
            let name: String = r.get(1);
            let b: Vec<u8> = r.get(2);
            let Ok(fk) = proto::ForeignKey::decode(b.as_slice()) else {
                continue;
            };
            if !self.schemas.contains_key(&fk.ref_table) || !self.schemas.contains_key(&q) {
                continue;
            }
            let exists = self
                .client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)",
                    &[&name, &crate::pg::quote::qualified(&q)],
                )
                .await
                .map_err(pg("look up foreign key"))?
                .is_some();
            let cols: Vec<String> = fk
                .columns
                .iter()
                .map(|c| crate::pg::quote::ident(c))
                .collect();
            let refs: Vec<String> = fk
                .ref_columns
                .iter()
                .map(|c| crate::pg::quote::ident(c))
                .collect();
            if !exists {
                self.client
                .batch_execute(&format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) NOT VALID",
                    crate::pg::quote::qualified(&q),
                    crate::pg::quote::ident(&name),
                    cols.join(", "),
                    crate::pg::quote::qualified(&fk.ref_table),
                    refs.join(", ")
                ))
                .await
                .map_err(|e| SinkError::Schema {
                    table: q.clone(),
                    message: pg(format!("add foreign key {name}"))(e).to_string(),
                })?;
            }
            self.client
                .execute(
                    "DELETE FROM veil_sink.pending_fks WHERE qualified = $1 AND name = $2",
                    &[&q, &name],
                )
                .await
                .map_err(pg("clear pending fk"))?;
        }
        Ok(())
    }
}

/// The elements of a one-dimensional array literal (`{a,"b c",NULL}`), unquoted; NULLs left out.
fn array_elements(t: &str) -> Vec<String> {
    let inner = t.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut was_quoted, mut escaped) = (false, false, false);
    for ch in inner.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
            was_quoted = true;
        } else if ch == ',' && !quoted {
            if was_quoted || cur != "NULL" {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
            was_quoted = false;
        } else {
            cur.push(ch);
        }
    }
    if !inner.is_empty() && (was_quoted || cur != "NULL") {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn array_elements_unquote_and_skip_nulls() {
        assert_eq!(
            super::array_elements(r#"{a,"b c",NULL,"NULL","x\"y"}"#),
            vec!["a", "b c", "NULL", "x\"y"]
        );
        assert!(super::array_elements("{}").is_empty());
    }
}
