//! Dev-side DDL from schema events: tables with their keys, enums, columns added, altered,
//! cleared or dropped when a rule changes, foreign keys once both ends exist; and the
//! bookkeeping schema `veil_sink`.

use prost::Message as _;
use std::sync::Arc;

use super::applier::Applier;
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
            for l in &e.labels {
                sql.push_str(&format!(
                    "ALTER TYPE {} ADD VALUE IF NOT EXISTS {};\n",
                    e.name,
                    crate::pg::quote::literal(l)
                ));
            }
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
                                    return Err(serr(format!(
                                        "the rule of key column {} changed ({} → {}); dev must be rebuilt: \
                                         start a new epoch (drop the veil_e* slot) so the snapshot runs again",
                                        c.name, o.rule, c.rule
                                    )));
                                }
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
        self.client
            .execute(
                "INSERT INTO veil_sink.tables (qualified, schema_pb) VALUES ($1, $2) \
                 ON CONFLICT (qualified) DO UPDATE SET schema_pb = EXCLUDED.schema_pb",
                &[&q, &s.encode_to_vec()],
            )
            .await
            .map_err(pg("record table"))?;
        self.stmts
            .retain(|k, _| !k.starts_with(&format!("{q}\u{0}")));
        self.schemas.insert(q, Arc::new(s));
        // Outside the snapshot, add foreign keys as soon as both ends exist.
        self.add_pending_fks().await
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
