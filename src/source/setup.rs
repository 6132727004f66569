//! `veil setup`: prepares production. Checks `wal_level=logical`, creates the publication
//! (FOR ALL TABLES, so new tables are seen and can be held), refuses — listing them — tables whose
//! UPDATE/DELETE would fail in a publication for lack of a replica identity, and installs the DDL
//! event trigger: it gives a new table without a primary key `REPLICA IDENTITY FULL` (so
//! production writes never fail because of veil) and writes a `veil_ddl` logical message that
//! the gate reads. With a `[vault]` section it also installs the vault's schema and roles in the
//! vault database, refusing a vault inside the source database.

use crate::config::{Config, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("source database ({}): {}", .0.what, .0.message)]
    Postgres(crate::pg::errors::PgError),
    #[error(
        "wal_level is {0}; logical replication needs wal_level = logical (then restart PostgreSQL)"
    )]
    WalLevel(String),
    #[error(
        "these tables have no replica identity, so their UPDATE and DELETE would fail once published: {}. \
         Give each a primary key or run ALTER TABLE … REPLICA IDENTITY FULL, then run setup again",
        .0.join(", ")
    )]
    NoReplicaIdentity(Vec<String>),
    #[error(
        "the vault DSN points at the source database itself; the vault must be a separate \
         database, because the publication covers every table of the source database"
    )]
    VaultInSource,
    #[error(transparent)]
    Vault(#[from] crate::deid::vault::VaultError),
}

/// What setup did, for the CLI to print.
#[derive(Debug, Default)]
pub struct SetupReport {
    pub publication_created: bool,
    pub trigger_installed: bool,
    pub tables: usize,
    pub vault_installed: bool,
}

const TRIGGER_SQL: &str = r#"
-- "_veil", not "veil": a role named veil would otherwise create its unqualified tables here
-- ("$user" comes first in the default search_path).
CREATE SCHEMA IF NOT EXISTS _veil;
-- The shape log: every table's columns (attnum, name) after each DDL, at the WAL position it
-- happened, so the stream binds registry decisions to the table and column they were made for
-- in WAL order. UNLOGGED: never published, never decoded (a crash empties it; setup refills
-- the baseline, and the stream then binds by the catalog).
CREATE UNLOGGED TABLE IF NOT EXISTS _veil.shapes (
  id      bigserial PRIMARY KEY,
  lsn     pg_lsn    NOT NULL,
  relid   oid       NOT NULL,
  nsp     text      NOT NULL,
  rel     text      NOT NULL,
  columns jsonb     NOT NULL
);
CREATE INDEX IF NOT EXISTS shapes_by_relid ON _veil.shapes (relid, lsn);
CREATE INDEX IF NOT EXISTS shapes_by_name ON _veil.shapes (nsp, rel, lsn);
REVOKE ALL ON _veil.shapes FROM PUBLIC;
-- Names and attnums only (what pg_attribute shows any role); the stream's role reads it.
GRANT SELECT ON _veil.shapes TO PUBLIC;
-- What the stream is held on (one row per slot), so `veil registry pending` can list a hold on
-- a table production no longer has. Written by the stream's role (the source DSN's, the same
-- as setup's usually); unlogged, never published.
CREATE UNLOGGED TABLE IF NOT EXISTS _veil.held (
  slot      text        PRIMARY KEY,
  tbl       text        NOT NULL,
  col       text        NOT NULL,
  type_name text        NOT NULL,
  reason    text        NOT NULL,
  since     timestamptz NOT NULL DEFAULT now()
);
-- Each online backfill's position after its last chunks (one row per slot and table), so a
-- restarted stream continues it. Keys are production's own values and never leave production;
-- unlogged, never published.
CREATE UNLOGGED TABLE IF NOT EXISTS _veil.backfills (
  slot       text        NOT NULL,
  tbl        text        NOT NULL,
  state      jsonb       NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (slot, tbl)
);
REVOKE ALL ON _veil.backfills FROM PUBLIC;
-- Scanner holds in force (one row per slot prefix, table and column), with the digest of the
-- column's decision when the scanner hit: a restarted stream stays held until that decision
-- changes. Names only; unlogged, never published.
CREATE UNLOGGED TABLE IF NOT EXISTS _veil.scan_holds (
  slot     text        NOT NULL,
  tbl      text        NOT NULL,
  col      text        NOT NULL,
  decision text        NOT NULL,
  since    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (slot, tbl, col)
);
REVOKE ALL ON _veil.scan_holds FROM PUBLIC;
-- Records the true current shape of one table (any role may call it: it can only record what
-- the catalog says). Never fails the DDL it runs under.
CREATE OR REPLACE FUNCTION _veil.record_shape(r oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $shape$
BEGIN
  INSERT INTO _veil.shapes (lsn, relid, nsp, rel, columns)
  SELECT pg_current_wal_insert_lsn(), c.oid, n.nspname, c.relname,
         coalesce((SELECT jsonb_agg(jsonb_build_array(a.attnum, a.attname) ORDER BY a.attnum)
                   FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                  '[]'::jsonb)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = r AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p';
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'veil: could not record the shape of relation %: %', r, SQLERRM;
END
$shape$;
REVOKE ALL ON FUNCTION _veil.record_shape(oid) FROM PUBLIC;
GRANT USAGE ON SCHEMA _veil TO PUBLIC;
GRANT EXECUTE ON FUNCTION _veil.record_shape(oid) TO PUBLIC;
-- The baseline: tables the log has not seen yet.
SELECT _veil.record_shape(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_veil') AND n.nspname NOT LIKE 'pg\_%'
   AND NOT EXISTS (SELECT 1 FROM _veil.shapes s WHERE s.relid = c.oid);
CREATE OR REPLACE FUNCTION _veil.on_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $veil$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF r.object_type IN ('table', 'table column') AND r.objid IS NOT NULL THEN
      PERFORM _veil.record_shape(r.objid);
    END IF;
    -- A table in the FOR ALL TABLES publication without a usable replica identity would make
    -- production's UPDATE and DELETE fail: a new table without a primary key (CREATE TABLE, CREATE
    -- TABLE AS, SELECT INTO), a primary key dropped, REPLICA IDENTITY NOTHING, or the index of
    -- REPLICA IDENTITY USING INDEX dropped gets REPLICA IDENTITY FULL. (The ALTER below fires this trigger again; the table
    -- then has an identity and nothing more happens.)
    IF r.object_type = 'table' AND r.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
       AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = r.objid AND c.relkind = 'r'
                   AND c.relpersistence = 'p'
                   AND (c.relreplident = 'n'
                     OR c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
                     OR c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) THEN
      EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', r.objid::regclass);
    END IF;
    IF r.object_type IN ('table', 'table column') THEN
      PERFORM pg_logical_emit_message(true, 'veil_ddl',
        json_build_object('tag', r.command_tag, 'object', r.object_identity, 'oid', r.objid)::text);
    ELSIF r.object_type = 'type' THEN
      -- An enum's labels as they are at this point of the WAL (the stream reads the catalog
      -- later, when a later ALTER may have renamed them).
      PERFORM pg_logical_emit_message(true, 'veil_ddl',
        json_build_object('tag', r.command_tag, 'object', r.object_identity, 'oid', r.objid,
          'labels', (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e
                     WHERE e.enumtypid = r.objid))::text);
    END IF;
  END LOOP;
END
$veil$;
DROP EVENT TRIGGER IF EXISTS veil_ddl;
CREATE EVENT TRIGGER veil_ddl ON ddl_command_end EXECUTE FUNCTION _veil.on_ddl();
-- DROP INDEX of the index a REPLICA IDENTITY USING INDEX names leaves the table without an
-- identity (as NOTHING): such tables get FULL.
CREATE OR REPLACE FUNCTION _veil.on_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $veil$
DECLARE t regclass;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() d WHERE d.object_type = 'index') THEN
    RETURN;
  END IF;
  FOR t IN SELECT c.oid::regclass FROM pg_class c
            WHERE c.relkind = 'r' AND c.relreplident = 'i' AND c.relpersistence = 'p'
              AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) LOOP
    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', t);
  END LOOP;
END
$veil$;
DROP EVENT TRIGGER IF EXISTS veil_drop;
CREATE EVENT TRIGGER veil_drop ON sql_drop EXECUTE FUNCTION _veil.on_drop();
"#;

pub async fn run(cfg: &Config) -> Result<SetupReport, SetupError> {
    let src = cfg.source()?;
    let client = crate::pg::tls::connect(&src.dsn.parse()?)
        .await
        .map_err(SetupError::Connect)?;
    let pg = |what: &'static str| {
        move |e: tokio_postgres::Error| {
            SetupError::Postgres(crate::pg::errors::PgError::new(what, &e))
        }
    };
    let wal: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(pg("show wal_level"))?
        .get(0);
    if wal != "logical" {
        return Err(SetupError::WalLevel(wal));
    }
    let missing: Vec<String> = client
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_veil') AND n.nspname NOT LIKE 'pg\\_%' \
               AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS \
                    (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(pg("check replica identities"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !missing.is_empty() {
        return Err(SetupError::NoReplicaIdentity(missing));
    }
    let mut report = SetupReport::default();
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&src.publication],
        )
        .await
        .map_err(pg("look up publication"))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION \"{}\" FOR ALL TABLES WITH (publish_via_partition_root = true)",
                src.publication.replace('"', "\"\"")
            ))
            .await
            .map_err(pg("create publication"))?;
        report.publication_created = true;
    } else {
        // Partitions publish as their root, so next month's partition is no new table to hold
        // and every partition takes the root's decisions (publications of older versions).
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION \"{}\" SET (publish_via_partition_root = true)",
                src.publication.replace('"', "\"\"")
            ))
            .await
            .map_err(pg("set publish_via_partition_root"))?;
    }
    client
        .batch_execute(TRIGGER_SQL)
        .await
        .map_err(pg("install DDL event trigger"))?;
    report.trigger_installed = true;
    report.tables = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_publication_tables WHERE pubname = $1",
            &[&src.publication],
        )
        .await
        .map_err(pg("count published tables"))?
        .get::<_, i64>(0) as usize;
    if let Some(vcfg) = &cfg.vault {
        let master = crate::deid::tokenize::MasterKey::from_config(&cfg.keys)?;
        let vault = crate::deid::vault::Vault::connect(vcfg, &master).await?;
        let ident = "SELECT system_identifier::text || '/' || current_database() FROM pg_catalog.pg_control_system()";
        let source_id: String = client
            .query_one(ident, &[])
            .await
            .map_err(pg("identify source"))?
            .get(0);
        if vault.identity().await? == source_id {
            return Err(SetupError::VaultInSource);
        }
        vault.install().await?;
        report.vault_installed = true;
    }
    Ok(report)
}

impl crate::error::Classify for SetupError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            SetupError::Connect(e) => e.class(),
            SetupError::Config(_) | SetupError::VaultInSource => ErrorClass::Usage,
            SetupError::Postgres(e) => e.class(),
            SetupError::WalLevel(_) | SetupError::NoReplicaIdentity(_) => ErrorClass::Definite,
            SetupError::Vault(e) => e.class(),
        }
    }
}

/// `veil setup` as a person runs it: the report printed.
pub async fn command(cfg: &Config) -> Result<(), SetupError> {
    let r = run(cfg).await?;
    println!(
        "setup done: publication {}, DDL trigger installed, {} tables published{}",
        if r.publication_created {
            "created"
        } else {
            "already present"
        },
        r.tables,
        if r.vault_installed {
            ", vault schema and roles installed"
        } else {
            ""
        }
    );
    Ok(())
}
