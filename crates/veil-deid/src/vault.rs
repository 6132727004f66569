//! The vault: value → token for every vault-held token, in a production-side database that no
//! publication covers (so its contents never stream back through veil), and the reveal log.
//!
//! - Allocation: the stream transforms a batch of rows against its in-memory cache; the values
//!   that missed are allocated here in one round trip per batch (look up, then insert the
//!   candidates with `ON CONFLICT DO NOTHING`, then read back the winners), before any event
//!   of the batch is published. A value first seen by two writers at once gets the one token
//!   that won the insert; a candidate that is already another value's token is retried with the
//!   next candidate, so tokens stay unique per domain.
//! - Roles: `veil setup --vault` creates `veil_vault_writer` (may insert and read tokens, but not
//!   the `value` column) and `veil_vault_reader` (the compliance role). Grant them to login
//!   roles. No role but the vault's owner reads the `value` column directly.
//! - Reveal, the only read path to a value: `veil_vault.request_reveal(…)` (SECURITY DEFINER,
//!   EXECUTE granted to the reader role only) commits a reveal-log row — who, ticket, domain, a
//!   hash of the token, never the value — carrying its own transaction id; `veil_vault.reveal(id)`
//!   returns the value only if that transaction has committed (`pg_xact_status`), only to the
//!   role that asked, and only once. Calling both inside `BEGIN … ROLLBACK` returns nothing.
//!
//! Errors never carry a value or a token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::{ConfigError, VaultConfig};

use futures_util::future::BoxFuture;

use crate::tokenize::{MasterKey, MemoryStore, NullStore, TokenStore, VaultRequest};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault database ({}): {}", .0.what, .0.message)]
    Postgres(crate::pg::errors::PgError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "vault: domain {domain}: no free token after {attempts} candidates (is the token space of the domain exhausted?)"
    )]
    Exhausted { domain: String, attempts: u32 },
    #[error("vault: {0}")]
    Refused(String),
}

impl crate::error::Classify for VaultError {
    /// Connection and server trouble is worth a retry (by SQLSTATE); the rest needs a person.
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            VaultError::Postgres(e) => e.class(),
            VaultError::Config(_) => ErrorClass::Usage,
            VaultError::Exhausted { .. } | VaultError::Refused(_) => ErrorClass::Definite,
        }
    }
}

fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> VaultError {
    move |e| VaultError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

/// The vault's schema and roles (idempotent). Run by `veil setup` against the vault database.
pub const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS veil_vault;
CREATE TABLE IF NOT EXISTS veil_vault.tokens (
    domain     text        NOT NULL,
    value_hash bytea       NOT NULL,
    token      text        NOT NULL,
    -- BLAKE3 of the token: indexed instead of the token, which can be as long as the value.
    token_hash bytea       NOT NULL,
    value      text        NOT NULL,
    key_id     text        NOT NULL,
    -- Identifier tokens are unique in their domain; surrogates (names, streets) need not be.
    uniq       boolean     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, value_hash)
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_unique_token ON veil_vault.tokens (domain, token_hash) WHERE uniq;
-- Surrogates (shared, not unique) by token; identifiers are found through the unique index.
-- One index entry per allocation fewer than an index over every row (the allocation's cost).
CREATE INDEX IF NOT EXISTS tokens_by_shared_token ON veil_vault.tokens (domain, token_hash) WHERE NOT uniq;
DROP INDEX IF EXISTS veil_vault.tokens_by_token;
CREATE TABLE IF NOT EXISTS veil_vault.reveals (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    db_user    text        NOT NULL DEFAULT current_user,
    os_user    text        NOT NULL,
    ticket     text        NOT NULL,
    domain     text        NOT NULL,
    token_hash text        NOT NULL,
    found      boolean     NOT NULL
);
-- The request's own transaction: a value is handed out only once it has committed.
ALTER TABLE veil_vault.reveals ADD COLUMN IF NOT EXISTS xid xid8;
-- The full BLAKE3 of the token (the vault's index key; `token_hash` is its short hex form).
ALTER TABLE veil_vault.reveals ADD COLUMN IF NOT EXISTS token_digest bytea;
ALTER TABLE veil_vault.reveals ADD COLUMN IF NOT EXISTS revealed_at timestamptz;
-- NULL: a key-inverted domain, where the vault is not consulted.
ALTER TABLE veil_vault.reveals ALTER COLUMN found DROP NOT NULL;

-- The only read path to a value. Step 1 commits a log row that carries its transaction id;
-- step 2 returns the value only if that transaction has committed, and only once. A single
-- function that logged and returned could be called inside BEGIN … ROLLBACK, keeping the value
-- and erasing the log.
CREATE OR REPLACE FUNCTION veil_vault.request_reveal(
    p_domain text, p_token_digest bytea, p_ticket text, p_os_user text, p_inverted boolean)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_found boolean;
    v_id bigint;
BEGIN
    IF p_ticket IS NULL OR btrim(p_ticket) = '' THEN
        RAISE EXCEPTION 'a reveal needs a ticket reference' USING ERRCODE = '22023';
    END IF;
    IF p_token_digest IS NULL OR length(p_token_digest) <> 32 THEN
        RAISE EXCEPTION 'token digest must be 32 bytes' USING ERRCODE = '22023';
    END IF;
    IF NOT p_inverted THEN
        -- One partial index each: identifiers (uniq), surrogates (NOT uniq).
        v_found := EXISTS (SELECT 1 FROM veil_vault.tokens
                           WHERE uniq AND domain = p_domain AND token_hash = p_token_digest)
                OR EXISTS (SELECT 1 FROM veil_vault.tokens
                           WHERE NOT uniq AND domain = p_domain AND token_hash = p_token_digest);
    END IF;
    INSERT INTO veil_vault.reveals
        (db_user, os_user, ticket, domain, token_hash, token_digest, found, xid)
    VALUES (session_user, coalesce(p_os_user, ''), p_ticket, p_domain,
            left(encode(p_token_digest, 'hex'), 32), p_token_digest, v_found,
            pg_current_xact_id())
    RETURNING id INTO v_id;
    RETURN v_id;
END
$fn$;

CREATE OR REPLACE FUNCTION veil_vault.reveal(p_request bigint)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r veil_vault.reveals%ROWTYPE;
    v_value text;
BEGIN
    SELECT * INTO r FROM veil_vault.reveals WHERE id = p_request FOR UPDATE;
    IF NOT FOUND OR r.xid IS NULL THEN
        RAISE EXCEPTION 'no such reveal request' USING ERRCODE = '42704';
    END IF;
    IF r.db_user <> session_user THEN
        RAISE EXCEPTION 'reveal request % belongs to another role', p_request USING ERRCODE = '42501';
    END IF;
    IF pg_xact_status(r.xid) IS DISTINCT FROM 'committed' THEN
        RAISE EXCEPTION 'reveal request % is not committed; commit the request first', p_request
            USING ERRCODE = '55000';
    END IF;
    IF r.revealed_at IS NOT NULL THEN
        RAISE EXCEPTION 'reveal request % was already used', p_request USING ERRCODE = '55000';
    END IF;
    IF r.found IS NULL THEN
        RAISE EXCEPTION 'domain % is key-inverted; the vault holds none of its values', r.domain
            USING ERRCODE = '22023';
    END IF;
    UPDATE veil_vault.reveals SET revealed_at = now() WHERE id = p_request;
    -- Identifier tokens are unique; a surrogate (a name) may stand for several values.
    SELECT string_agg(value, chr(10) ORDER BY created_at) INTO v_value
      FROM (SELECT value, created_at FROM veil_vault.tokens
             WHERE uniq AND domain = r.domain AND token_hash = r.token_digest
            UNION ALL
            SELECT value, created_at FROM veil_vault.tokens
             WHERE NOT uniq AND domain = r.domain AND token_hash = r.token_digest) AS t;
    RETURN v_value;
END
$fn$;

REVOKE ALL ON SCHEMA veil_vault FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA veil_vault FROM PUBLIC;
REVOKE ALL ON FUNCTION veil_vault.request_reveal(text, bytea, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION veil_vault.reveal(bigint) FROM PUBLIC;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'veil_vault_writer') THEN
    CREATE ROLE veil_vault_writer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'veil_vault_reader') THEN
    CREATE ROLE veil_vault_reader NOLOGIN;
  END IF;
END $$;
GRANT USAGE ON SCHEMA veil_vault TO veil_vault_writer, veil_vault_reader;
GRANT SELECT (domain, value_hash, token, token_hash, key_id, uniq, created_at), INSERT ON veil_vault.tokens TO veil_vault_writer;
-- The compliance role reads values only through the two functions (earlier versions granted
-- SELECT on the table and INSERT on the log; both are taken back).
REVOKE ALL ON veil_vault.tokens FROM veil_vault_reader;
REVOKE ALL ON veil_vault.reveals FROM veil_vault_reader;
REVOKE ALL ON SEQUENCE veil_vault.reveals_id_seq FROM veil_vault_reader;
GRANT SELECT ON veil_vault.reveals TO veil_vault_reader;
GRANT EXECUTE ON FUNCTION veil_vault.request_reveal(text, bytea, text, text, boolean) TO veil_vault_reader;
GRANT EXECUTE ON FUNCTION veil_vault.reveal(bigint) TO veil_vault_reader;
";

/// Candidates tried per value before giving up.
const MAX_ATTEMPTS: u32 = 256;

/// New values from which an allocation is split over every vault connection.
const PARALLEL_FROM: usize = 1000;

/// The stream's handle on the vault: a connection and a bounded cache of hash → token.
pub struct Vault {
    client: tokio_postgres::Client,
    /// Further connections a large allocation is split over (`vault.connections`).
    more: Vec<tokio_postgres::Client>,
    cache: RwLock<TokenCache>,
    key_id: String,
    /// Most values of the last allocation were new to the vault (a snapshot into an empty
    /// vault, new keys): the next one inserts first and looks up only what did not insert,
    /// saving a round trip and an index probe per value.
    mostly_new: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault(key_id={})", self.key_id)
    }
}

impl TokenStore for Vault {
    fn get(&self, _domain: &str, hash: &[u8; 32]) -> Option<Arc<str>> {
        // Value hashes are keyed per domain, so the hash alone identifies (domain, value).
        self.cache.read().ok()?.get(hash)
    }
}

/// The token vault as the stream uses it: read tokens on the hot path ([`TokenStore`]) and
/// allocate a batch's first sightings.
///
/// Durability contract: when `allocate` returns `Ok`, every requested value has a token that is
/// committed in the store and visible through `get`; only then may the caller publish anything
/// that carries one of those tokens ("a published token is in the vault"). Two writers that
/// allocate the same value concurrently both end up with the one token that won.
pub trait TokenVault: TokenStore {
    fn allocate(&self, requests: Vec<VaultRequest>) -> BoxFuture<'_, Result<(), VaultError>>;
    /// `false` for the null store (no vault configured): plans that need vault-held tokens are
    /// refused up front.
    fn holds_tokens(&self) -> bool {
        true
    }
}

impl TokenVault for Vault {
    fn allocate(&self, requests: Vec<VaultRequest>) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(Vault::allocate(self, requests))
    }
}

impl TokenVault for MemoryStore {
    fn allocate(&self, requests: Vec<VaultRequest>) -> BoxFuture<'_, Result<(), VaultError>> {
        MemoryStore::allocate(self, &requests);
        Box::pin(async { Ok(()) })
    }
}

impl TokenVault for NullStore {
    fn allocate(&self, requests: Vec<VaultRequest>) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(async move {
            if requests.is_empty() {
                Ok(())
            } else {
                Err(VaultError::Config(ConfigError::Invalid(
                    "a column uses vault-held tokens, but no [vault] is configured".into(),
                )))
            }
        })
    }
    fn holds_tokens(&self) -> bool {
        false
    }
}

impl Vault {
    pub async fn connect(cfg: &VaultConfig, master: &MasterKey) -> Result<Self, VaultError> {
        let target = cfg.dsn.parse()?;
        let connect = || async {
            crate::pg::tls::connect(&target).await.map_err(|e| match e {
                crate::pg::tls::ConnectError::Config(c) => VaultError::Config(c),
                crate::pg::tls::ConnectError::Postgres(p) => {
                    VaultError::Postgres(crate::pg::errors::PgError::new("connect", &p))
                }
            })
        };
        let client = connect().await?;
        let mut more = Vec::new();
        for _ in 1..cfg.connections.max(1) {
            more.push(connect().await?);
        }
        Ok(Vault {
            client,
            more,
            cache: RwLock::new(TokenCache::new(cfg.cache_entries.max(1000))),
            key_id: master.key_id(),
            mostly_new: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Installs the schema and roles (needs a role that may create them).
    pub async fn install(&self) -> Result<(), VaultError> {
        self.client
            .batch_execute(SCHEMA_SQL)
            .await
            .map_err(pg("install schema"))
    }

    /// `system identifier/database` of the vault database (setup refuses the source itself).
    pub async fn identity(&self) -> Result<String, VaultError> {
        Ok(self
            .client
            .query_one(
                "SELECT system_identifier::text || '/' || current_database() FROM pg_catalog.pg_control_system()",
                &[],
            )
            .await
            .map_err(pg("identify"))?
            .get(0))
    }

    /// The underlying connection (for `veil vault reveal`).
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    pub fn cached(&self) -> usize {
        self.cache.read().map(|c| c.len()).unwrap_or(0)
    }

    fn remember(&self, entries: Vec<([u8; 32], Arc<str>)>) {
        if let Ok(mut cache) = self.cache.write()
            && cache.remember(entries)
        {
            metrics::counter!(crate::metrics::VAULT_CACHE_RESETS).increment(1);
        }
    }

    /// Makes sure every request has a token in the cache: looks up what the vault already has,
    /// allocates the rest, and reads back the winners of concurrent first sightings.
    pub async fn allocate(&self, requests: Vec<VaultRequest>) -> Result<(), VaultError> {
        let mut pending: HashMap<[u8; 32], VaultRequest> = HashMap::new();
        for r in requests {
            if self.get(&r.rule.domain, &r.hash).is_none() {
                pending.entry(r.hash).or_insert(r);
            }
        }
        let requested = pending.len();
        if requested == 0 {
            return Ok(());
        }
        // A large batch (a snapshot's) is split by value hash over the vault connections and
        // allocated on all of them at once; the parts never share a value.
        let clients: Vec<&tokio_postgres::Client> =
            std::iter::once(&self.client).chain(&self.more).collect();
        let n = if requested >= PARALLEL_FROM {
            clients.len()
        } else {
            1
        };
        let mut parts: Vec<HashMap<[u8; 32], VaultRequest>> =
            (0..n).map(|_| HashMap::new()).collect();
        for (h, r) in pending {
            parts[h[0] as usize % n].insert(h, r);
        }
        let results = futures_util::future::join_all(
            parts
                .into_iter()
                .zip(clients)
                .map(|(part, client)| self.allocate_on(client, part)),
        )
        .await;
        // Every token of this batch, remembered together at the end: the cache's bound never
        // evicts a token of the batch that asked for it.
        let mut batch_tokens = Vec::with_capacity(requested);
        let mut existed = 0usize;
        for r in results {
            let (tokens, found) = r?;
            batch_tokens.extend(tokens);
            existed += found;
        }
        self.mostly_new.store(
            existed * 4 < requested,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.remember(batch_tokens);
        Ok(())
    }

    /// Allocates `pending` on one connection: returns the tokens, and how many of the values
    /// the vault already had.
    async fn allocate_on(
        &self,
        client: &tokio_postgres::Client,
        mut pending: HashMap<[u8; 32], VaultRequest>,
    ) -> Result<(Vec<([u8; 32], Arc<str>)>, usize), VaultError> {
        let mut attempt = 0u32;
        let mut crossings = 0u32;
        let mut batch_tokens = Vec::new();
        let mut existed = 0usize;
        // Insert first when the last allocation was mostly new values: what did not insert (it
        // exists, or its candidate token is taken) is looked up before any next candidate.
        let mut skip_lookup = self.mostly_new.load(std::sync::atomic::Ordering::Relaxed);
        while !pending.is_empty() {
            if !std::mem::take(&mut skip_lookup) {
                let found = self.lookup(client, &mut pending).await?;
                existed += found.len();
                batch_tokens.extend(found);
                if pending.is_empty() {
                    break;
                }
            }
            if attempt >= MAX_ATTEMPTS {
                let domain = pending
                    .values()
                    .next()
                    .map(|r| r.rule.domain.to_string())
                    .unwrap_or_default();
                return Err(VaultError::Exhausted {
                    domain,
                    attempts: attempt,
                });
            }
            // Sorted, so concurrent writers take the primary-key locks in the same order.
            let mut batch: Vec<&VaultRequest> = pending.values().collect();
            batch.sort_by(|a, b| (&a.rule.domain, a.hash).cmp(&(&b.rule.domain, b.hash)));
            let mut domains = Vec::with_capacity(batch.len());
            let mut hashes = Vec::with_capacity(batch.len());
            let mut tokens = Vec::with_capacity(batch.len());
            let mut values = Vec::with_capacity(batch.len());
            let mut uniq = Vec::with_capacity(batch.len());
            for r in &batch {
                domains.push(r.rule.domain.to_string());
                hashes.push(r.hash.to_vec());
                tokens.push(r.rule.candidate(&r.value, attempt));
                values.push(r.value.clone());
                uniq.push(r.rule.kind.unique());
            }
            let token_hashes: Vec<Vec<u8>> = tokens
                .iter()
                .map(|t| blake3::hash(t.as_bytes()).as_bytes().to_vec())
                .collect();
            let result = client
                .query(
                    "INSERT INTO veil_vault.tokens (domain, value_hash, token, token_hash, value, key_id, uniq) \
                     SELECT d, h, t, th, v, $5, q FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $6::bool[], $7::bytea[]) \
                       AS u(d, h, t, v, q, th) \
                     ON CONFLICT DO NOTHING RETURNING value_hash, token",
                    &[&domains, &hashes, &tokens, &values, &self.key_id, &uniq, &token_hashes],
                )
                .await;
            let rows = match result {
                Ok(rows) => rows,
                Err(e)
                    if e.code().is_some_and(|c| {
                        *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    }) =>
                {
                    // Another writer's batch crossed ours; look up and try again.
                    crossings += 1;
                    if crossings > 100 {
                        return Err(pg("allocate tokens")(e));
                    }
                    tracing::debug!("vault allocation crossed another writer; retrying");
                    continue;
                }
                Err(e) => return Err(pg("allocate tokens")(e)),
            };
            let mut won = Vec::with_capacity(rows.len());
            for row in rows {
                let h: Vec<u8> = row.get(0);
                let t: String = row.get(1);
                if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
                    pending.remove(&h);
                    won.push((h, Arc::<str>::from(t)));
                }
            }
            metrics::counter!(crate::metrics::VAULT_ALLOCATED).increment(won.len() as u64);
            batch_tokens.extend(won);
            // What did not insert either lost a race for its value (the lookup finds the
            // winner) or hit a taken token (next candidate).
            attempt += 1;
        }
        Ok((batch_tokens, existed))
    }

    /// Looks the pending values up; returns what the vault already has (and drops it from
    /// `pending`).
    async fn lookup(
        &self,
        client: &tokio_postgres::Client,
        pending: &mut HashMap<[u8; 32], VaultRequest>,
    ) -> Result<Vec<([u8; 32], Arc<str>)>, VaultError> {
        let mut domains = Vec::with_capacity(pending.len());
        let mut hashes = Vec::with_capacity(pending.len());
        for r in pending.values() {
            domains.push(r.rule.domain.to_string());
            hashes.push(r.hash.to_vec());
        }
        let rows = client
            .query(
                "SELECT t.value_hash, t.token FROM unnest($1::text[], $2::bytea[]) AS u(d, h) \
                 JOIN veil_vault.tokens t ON t.domain = u.d AND t.value_hash = u.h",
                &[&domains, &hashes],
            )
            .await
            .map_err(pg("look up tokens"))?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let h: Vec<u8> = row.get(0);
            let t: String = row.get(1);
            if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
                pending.remove(&h);
                found.push((h, Arc::<str>::from(t)));
            }
        }
        Ok(found)
    }
}

/// The stream's bounded cache of value hash → token (value hashes are keyed per domain, so the
/// hash alone identifies the domain and the value).
pub struct TokenCache {
    map: HashMap<[u8; 32], Arc<str>>,
    cap: usize,
}

impl TokenCache {
    pub fn new(cap: usize) -> Self {
        TokenCache {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<Arc<str>> {
        self.map.get(hash).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Remembers one batch's tokens. When they would overflow the bound, the cache starts over
    /// first (evicted tokens are looked up again on their next use), so after the call every
    /// token of the batch is present — even a batch larger than the bound. Returns whether the
    /// cache started over.
    pub fn remember(&mut self, entries: Vec<([u8; 32], Arc<str>)>) -> bool {
        let reset = self.map.len() + entries.len() > self.cap && !self.map.is_empty();
        if reset {
            self.map.clear();
        }
        self.map.extend(entries);
        reset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> [u8; 32] {
        [i; 32]
    }

    #[test]
    fn cache_is_bounded_and_never_evicts_the_batch_it_remembers() {
        let mut c = TokenCache::new(4);
        assert!(!c.remember(vec![(h(1), "a".into()), (h(2), "b".into())]));
        assert_eq!(c.get(&h(1)).as_deref(), Some("a"));
        // 2 + 3 > 4: starts over, and the new batch is all there.
        assert!(c.remember(vec![
            (h(3), "c".into()),
            (h(4), "d".into()),
            (h(5), "e".into())
        ]));
        assert_eq!(c.get(&h(1)), None);
        for i in 3..=5 {
            assert!(c.get(&h(i)).is_some());
        }
        // A batch larger than the bound is kept whole.
        let big: Vec<_> = (10..20).map(|i| (h(i), Arc::<str>::from("t"))).collect();
        c.remember(big);
        assert_eq!(c.len(), 10);
        assert!((10..20).all(|i| c.get(&h(i)).is_some()));
    }

    #[test]
    fn null_store_refuses_allocation_and_says_it_holds_nothing() {
        let n = NullStore;
        assert!(!TokenVault::holds_tokens(&n));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt.block_on(TokenVault::allocate(&n, Vec::new())).is_ok());
    }
}
