//! What the sink keeps in dev besides the data: the bookkeeping schema `veil_sink` (checkpoint,
//! table schemas, foreign keys waiting for their other end) and reading the stored schemas.

use prost::Message as _;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::Client;

use super::error::{SinkError, pg};
use crate::proto;

/// The dev-side bookkeeping tables.
pub const BOOTSTRAP_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS veil_sink;
CREATE TABLE IF NOT EXISTS veil_sink.checkpoint (
    topic text PRIMARY KEY,
    kafka_offset bigint NOT NULL,
    epoch bigint NOT NULL,
    last_commit_lsn bigint NOT NULL,
    last_commit_time timestamptz,
    source_id text NOT NULL DEFAULT '',
    registry_version text NOT NULL DEFAULT '',
    run_id bigint NOT NULL DEFAULT 0,
    seq bigint NOT NULL DEFAULT 0,
    known_runs bigint[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS veil_sink.tables (
    qualified text PRIMARY KEY,
    schema_pb bytea NOT NULL
);
-- Schema events of replayed (skipped) source transactions: the last one of each table is applied
-- before the next transaction that is applied (the replay is over, dev is where the stream is).
CREATE TABLE IF NOT EXISTS veil_sink.deferred_schemas (
    qualified text PRIMARY KEY,
    schema_pb bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS veil_sink.pending_fks (
    qualified text NOT NULL,
    name text NOT NULL,
    fk_pb bytea NOT NULL,
    PRIMARY KEY (qualified, name)
);
";

/// The table schemas recorded in `veil_sink.tables` (inside the current dev transaction).
pub async fn load_schemas(
    client: &Client,
) -> Result<HashMap<String, Arc<proto::TableSchema>>, SinkError> {
    load_from(client, "veil_sink.tables").await
}

/// The schema events deferred by replayed transactions (`veil_sink.deferred_schemas`).
pub async fn load_deferred(
    client: &Client,
) -> Result<std::collections::BTreeMap<String, proto::TableSchema>, SinkError> {
    Ok(load_from(client, "veil_sink.deferred_schemas")
        .await?
        .into_iter()
        .map(|(q, s)| (q, Arc::unwrap_or_clone(s)))
        .collect())
}

/// Records `s` as the schema of `qualified` in `veil_sink.tables` or `veil_sink.deferred_schemas`
/// (inside the current dev transaction).
pub async fn save_schema(
    client: &Client,
    table: &str,
    qualified: &str,
    s: &proto::TableSchema,
) -> Result<(), SinkError> {
    client
        .execute(
            &format!(
                "INSERT INTO {table} (qualified, schema_pb) VALUES ($1, $2) \
                 ON CONFLICT (qualified) DO UPDATE SET schema_pb = EXCLUDED.schema_pb"
            ),
            &[&qualified, &s.encode_to_vec()],
        )
        .await
        .map_err(pg(format!("record schema in {table}")))?;
    Ok(())
}

async fn load_from(
    client: &Client,
    table: &str,
) -> Result<HashMap<String, Arc<proto::TableSchema>>, SinkError> {
    let mut schemas = HashMap::new();
    for r in client
        .query(&format!("SELECT qualified, schema_pb FROM {table}"), &[])
        .await
        .map_err(pg("read table list"))?
    {
        let q: String = r.get(0);
        let b: Vec<u8> = r.get(1);
        let s = proto::TableSchema::decode(b.as_slice()).map_err(|e| SinkError::Schema {
            table: q.clone(),
            message: format!("stored schema unreadable: {e}"),
        })?;
        schemas.insert(q, Arc::new(s));
    }
    Ok(schemas)
}
