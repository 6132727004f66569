//! De-identification transforms: what a real value becomes before it leaves production.
//!
//! Two families, chosen per column by the registry's profile:
//! - `expert_determination`: keyed, deterministic tokens. Integers go through a keyed
//!   format-preserving permutation (an alternating Feistel network over exactly the bits of the
//!   type's non-negative range, SipHash-1-3 round function), so ids keep their type and sign and
//!   never collide; it inverts with the key. Other identifiers get a candidate computed from the
//!   value with the domain key.
//! - `safe_harbor`: tokens *not derived from the value*: random, allocated and remembered by the
//!   vault so they stay consistent.
//!
//! Every token that is not an integer permutation is held by the vault ([`crate::vault`]): the
//! vault keeps it unique within its domain (retrying the next candidate on a clash) and remembers
//! value → token so one-way tokens can be revealed by the compliance role. The hot path only
//! looks tokens up ([`TokenStore`]); a miss is recorded as a [`VaultRequest`] and the caller
//! allocates the batch's misses in one round trip, then transforms again.
//!
//! Shapes: SSNs become SSNs in never-issued areas (000, 666, 900–999); e-mails keep
//! `local@domain` shape on the reserved `example.com`; names, streets and cities become surrogates
//! from bundled lists of the same script ([`crate::surrogate`]); other text keeps its layout
//! (digits stay digits, letters stay letters of their script and case). `date_shift` moves every
//! date of one entity by the same keyed offset; `year_only`, `zip3`, `age_cap` are the Safe Harbor
//! generalizations; `redact` replaces scanner spans; `json` applies rules to paths inside JSON.
//!
//! Errors name the rule and the type, never the value.

pub mod apply;
pub mod dates;
pub mod keys;
pub mod store;
pub mod text;

pub use apply::{BindCx, Cx, JsonRules, RuleKey, apply};
pub use dates::{shift_date_text, shift_days, zip3, zip3_with};
pub use keys::{DeidError, DomainKey, EMAIL_DOMAIN, MasterKey, Seed, shape};
pub use store::{MemoryStore, NullStore, TokenStore};
pub use text::{TokenKind, VaultRequest, VaultRule};

#[cfg(test)]
mod tests;
