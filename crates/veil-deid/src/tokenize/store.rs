//! The one token-store contract the hot path reads through ([`TokenStore`]): the production
//! vault (`crate::vault::Vault`), the in-process [`MemoryStore`] (tests, benches, dry runs) and
//! the [`NullStore`] (no vault: every vault-held token is a miss).
//!
//! Durability: a `TokenStore` only answers what was *committed* to it; a miss is allocated by the
//! owner of the store (one round trip per batch) before anything that carries the token is
//! published, so a published token is always remembered.

use super::text::VaultRequest;
use std::sync::Arc;

/// Read access to vault-held tokens (the hot path never writes).
pub trait TokenStore: Send + Sync {
    fn get(&self, domain: &str, hash: &[u8; 32]) -> Option<Arc<str>>;
}

/// The store of a process without a vault: everything is a miss.
pub struct NullStore;
impl TokenStore for NullStore {
    fn get(&self, _: &str, _: &[u8; 32]) -> Option<Arc<str>> {
        None
    }
}

/// An in-process token store that allocates like the vault does (candidate 0, 1, … until one is
/// free in the domain). For unit tests, benches and dry runs; production uses the vault.
/// Value hashes are keyed per domain, so the hash alone identifies (domain, value).
type TokenMap = std::collections::HashMap<[u8; 32], Arc<str>>;

#[derive(Default)]
pub struct MemoryStore {
    by_hash: std::sync::RwLock<TokenMap>,
    taken: std::sync::RwLock<std::collections::HashSet<(Arc<str>, Arc<str>)>>,
}

impl TokenStore for MemoryStore {
    fn get(&self, _domain: &str, hash: &[u8; 32]) -> Option<Arc<str>> {
        self.by_hash.read().ok()?.get(hash).cloned()
    }
}

impl MemoryStore {
    /// Allocates tokens for every request (unique per domain).
    pub fn allocate(&self, requests: &[VaultRequest]) {
        let (Ok(mut by_hash), Ok(mut taken)) = (self.by_hash.write(), self.taken.write()) else {
            return;
        };
        for r in requests {
            let k = r.hash;
            if by_hash.contains_key(&k) {
                continue;
            }
            let mut attempt = 0;
            loop {
                let t: Arc<str> = r.rule.candidate(&r.value, attempt).into();
                if !r.rule.kind.unique() || taken.insert((r.rule.domain.clone(), t.clone())) {
                    by_hash.insert(k, t);
                    break;
                }
                attempt += 1;
            }
        }
    }
}
