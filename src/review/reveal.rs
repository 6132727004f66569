//! The compliance role's way back from a token to its value (`veil vault reveal`): integer
//! permutations are inverted with the key, other tokens are looked up in the vault. The reveal
//! log row is written before a value is returned (no log row, no value), and with an audit trail
//! configured a `Reveal` record is journaled and sent first as well. Production side only.

use crate::deid::registry::{Decision, Profile, Registry, Rule};
use crate::deid::tokenize::MasterKey;
use crate::deid::vault::{Vault, VaultError};

fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> VaultError {
    move |e| VaultError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

/// How a domain's tokens are made, from the registry: an integer permutation (inverts with the
/// key) or vault-held (looked up).
enum DomainForm {
    IntPerm { bits: u32 },
    Held,
}

fn domain_form(registry: &Registry, domain: &str) -> Option<DomainForm> {
    for t in registry.tables.values() {
        for c in t.columns.values() {
            let Decision::Publish(rule) = &c.decision else {
                continue;
            };
            let mut rules = vec![rule];
            if let Rule::Json { paths, .. } = rule {
                rules.extend(paths.iter().map(|(_, r)| r));
            }
            for r in rules {
                match r {
                    Rule::Tokenize { domain: d } if d == domain => {
                        let bits = match c.type_name.as_str() {
                            "smallint" => Some(15),
                            "integer" => Some(31),
                            "bigint" => Some(63),
                            _ => None,
                        };
                        return Some(match (bits, c.profile) {
                            (Some(bits), Profile::ExpertDetermination) => {
                                DomainForm::IntPerm { bits }
                            }
                            _ => DomainForm::Held,
                        });
                    }
                    Rule::Ssn { domain: d }
                    | Rule::Email { domain: d }
                    | Rule::Surrogate { domain: d, .. }
                        if d == domain =>
                    {
                        return Some(DomainForm::Held);
                    }
                    _ => {}
                }
            }
        }
    }
    None
}

/// One reveal request, as the compliance officer gives it.
pub struct RevealRequest<'a> {
    pub domain: &'a str,
    pub token: &'a str,
    pub ticket: &'a str,
    pub os_user: &'a str,
}

/// Maps a token back to its value: inverts integer permutations with the key, asks the vault for
/// other tokens. The reveal-log row is committed first (`veil_vault.request_reveal`); the vault
/// hands a value out only for a committed request (`veil_vault.reveal`). No log row, no value.
/// `Ok(None)`: the token is unknown in that domain (also logged).
pub async fn reveal(
    client: &tokio_postgres::Client,
    registry: &Registry,
    master: &MasterKey,
    req: &RevealRequest<'_>,
) -> Result<Option<String>, VaultError> {
    if req.ticket.trim().is_empty() {
        return Err(VaultError::Refused(
            "a reveal needs a ticket reference (--ticket)".into(),
        ));
    }
    let form = domain_form(registry, req.domain).ok_or_else(|| {
        VaultError::Refused(format!(
            "domain {} is not used by any column of the registry",
            req.domain
        ))
    })?;
    // Step 1, committed on its own (the client is in autocommit): the log row.
    let digest = blake3::hash(req.token.as_bytes()).as_bytes().to_vec();
    let inverted = matches!(form, DomainForm::IntPerm { .. });
    let request: i64 = client
        .query_one(
            "SELECT veil_vault.request_reveal($1, $2, $3, $4, $5)",
            &[&req.domain, &digest, &req.ticket, &req.os_user, &inverted],
        )
        .await
        .map_err(pg("write the reveal log (nothing revealed)"))?
        .get(0);
    // Step 2: the value, handed out by the vault only for a committed request.
    let value = match form {
        DomainForm::IntPerm { bits } => req.token.trim().parse::<i64>().ok().map(|t| {
            master
                .domain_key(req.domain)
                .unpermute_int(t, bits)
                .to_string()
        }),
        DomainForm::Held => client
            .query_one("SELECT veil_vault.reveal($1)", &[&request])
            .await
            .map_err(pg("reveal"))?
            .get::<_, Option<String>>(0),
    };
    let token_hash = blake3::hash(req.token.as_bytes()).to_hex()[..32].to_owned();
    tracing::info!(
        domain = req.domain,
        ticket = req.ticket,
        token_hash = %token_hash,
        found = value.is_some(),
        "vault reveal"
    );
    Ok(value)
}

/// `veil vault reveal`: loads the registry and the master key from the production-side config,
/// connects to the vault and reveals one token (see [`reveal`]). A config without `[vault]` or
/// without a key (the dev side's) cannot reveal anything.
pub async fn reveal_with_config(
    cfg: &crate::config::Config,
    domain: &str,
    token: &str,
    ticket: &str,
) -> Result<Option<String>, VaultError> {
    let vcfg = cfg.vault()?;
    let master = MasterKey::from_config(&cfg.keys)?;
    let registry = Registry::load(&cfg.registry.dir)
        .map_err(|e| VaultError::Refused(format!("registry: {e}")))?;
    let vault = Vault::connect(vcfg, &master).await?;
    let os_user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    // With an audit trail configured, the reveal is also an audit record of the "vault" chain,
    // journaled and sent before the value is returned (no record, no value).
    let mut writer = match &cfg.audit {
        Some(a) => {
            let kafka = cfg.kafka()?;
            std::fs::create_dir_all(&a.journal_dir)
                .map_err(|e| VaultError::Refused(format!("audit journal: {e}")))?;
            let lock = std::fs::File::create(a.journal_dir.join("vault.lock"))
                .map_err(|e| VaultError::Refused(format!("audit journal lock: {e}")))?;
            // One sequencing writer per chain: reveals on this host take turns.
            lock.lock()
                .map_err(|e| VaultError::Refused(format!("audit journal lock: {e}")))?;
            let w =
                crate::audit::AuditWriter::open(a, crate::audit::audit_key(cfg)?, kafka, "vault")
                    .await
                    .map_err(|e| VaultError::Refused(format!("audit trail: {e}")))?;
            Some((w, lock))
        }
        None => None,
    };
    let value = reveal(
        vault.client(),
        &registry,
        &master,
        &RevealRequest {
            domain,
            token,
            ticket,
            os_user: &os_user,
        },
    )
    .await?;
    if let Some((w, _lock)) = writer.as_mut() {
        let db_user: String = vault
            .client()
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(pg("identify role"))?
            .get(0);
        w.record(crate::proto::audit_record::Body::Reveal(
            crate::proto::Reveal {
                os_user,
                db_user,
                ticket: ticket.to_owned(),
                domain: domain.to_owned(),
                token_hash: blake3::hash(token.as_bytes()).to_hex()[..32].to_owned(),
                found: value.is_some(),
            },
        ))
        .await
        .map_err(|e| VaultError::Refused(format!("audit trail (nothing revealed): {e}")))?;
    }
    Ok(value)
}

/// `veil vault reveal` as the compliance officer runs it: the value printed (after the log);
/// an unknown token exits 1 (the attempt is logged too).
pub async fn command(
    cfg: &crate::config::Config,
    domain: &str,
    token: &str,
    ticket: &str,
) -> Result<(), crate::error::Failure> {
    match reveal_with_config(cfg, domain, token, ticket).await? {
        Some(value) => {
            println!("{value}");
            Ok(())
        }
        None => Err(crate::error::Failure::new(
            crate::error::ErrorClass::Definite,
            format!("no such token in domain {domain} (the attempt is logged)"),
        )),
    }
}
