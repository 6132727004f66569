//! `veil registry …` as a person runs it: the workflow's results printed (never a value).

use std::path::Path;

use super::workflow::{self as review, ColumnDecision};
use crate::config::Config;
use crate::error::{ErrorClass, Failure};

/// `veil registry pending [--json]` and `veil registry propose` (which also stores the proposals).
pub async fn pending(cfg: &Config, json: bool, store: bool) -> Result<(), Failure> {
    let items = if store {
        review::propose(cfg).await?
    } else {
        review::pending(cfg).await?
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return Ok(());
    }
    if items.is_empty() {
        println!("nothing pending: every published column has a decision");
    }
    for p in &items {
        let prop = p.proposal.as_ref();
        println!(
            "{}.{} ({}) {:?}: propose {} {}{} — {}",
            p.table,
            p.column,
            p.type_name,
            p.why,
            prop.map(|x| x.class.as_str()).unwrap_or("?"),
            prop.and_then(|x| x.rule.clone()).unwrap_or_default(),
            prop.and_then(|x| x.domain.clone())
                .map(|d| format!("({d})"))
                .unwrap_or_default(),
            prop.map(|x| x.evidence()).unwrap_or_default()
        );
        if let Some(x) = prop.filter(|x| !x.paths.is_empty()) {
            let paths: Vec<String> = x
                .paths
                .iter()
                .map(|j| format!("{} {}", j.path, j.rule))
                .collect();
            println!("    paths: {}", paths.join(", "));
        }
        if !p.shares_domain_with.is_empty() {
            println!("    same domain: {}", p.shares_domain_with.join(", "));
        }
    }
    for s in review::stale(cfg).await? {
        println!(
            "{}.{} ({}) stale: the registry decides a column production does not have (dropped or renamed); \
             remove its line so a new column of that name is never mistaken for it",
            s.table, s.column, s.type_name
        );
    }
    if store {
        println!(
            "proposals stored in {}; accept them with `veil registry approve --all-proposed --by NAME`",
            review::proposals_path(&cfg.registry.dir).display()
        );
    }
    Ok(())
}

/// `veil registry approve` (one column, or `--all-proposed`).
pub async fn approve(
    cfg: &Config,
    target: Option<&str>,
    all_proposed: bool,
    d: &ColumnDecision,
) -> Result<(), Failure> {
    if all_proposed {
        let n = review::approve_all_proposed(cfg, &d.by).await?;
        println!("{n} proposals accepted by {}", d.by);
        return Ok(());
    }
    let Some(target) = target else {
        return Err(Failure::new(
            ErrorClass::Usage,
            "give schema.table.column or --all-proposed",
        ));
    };
    let path = review::approve(cfg, target, d).await?;
    print_written(&path);
    Ok(())
}

/// `veil registry block`.
pub async fn block(cfg: &Config, target: &str, by: &str, reason: &str) -> Result<(), Failure> {
    let path = review::block(cfg, target, by, reason).await?;
    print_written(&path);
    Ok(())
}

/// `veil registry unblock`.
pub async fn unblock(cfg: &Config, target: &str, by: &str, reason: &str) -> Result<(), Failure> {
    let path = review::unblock(cfg, target, by, reason).await?;
    print_written(&path);
    Ok(())
}

/// `veil registry token NAME`: a new reviewer token on stdout, the config line on stderr.
pub fn token(name: &str) -> Result<(), Failure> {
    if !crate::config::valid_reviewer_name(name) {
        return Err(Failure::new(
            crate::error::ErrorClass::Usage,
            format!("{name:?}: a reviewer name is 1 to 64 letters, digits, `.`, `_`, `@` or `-`"),
        ));
    }
    let (token, digest) = crate::review::api::new_reviewer_token();
    eprintln!(
        "Give the token below to {name} only (veil keeps only its digest). Add to the config's [api.reviewers]:\n{name} = \"{digest}\""
    );
    println!("{token}");
    Ok(())
}

fn print_written(path: &Path) {
    println!("decision written to {}", path.display());
}
