//! `veil audit …` as a person runs it: archive, verify, query and prove, printed.

use std::path::Path;

use crate::config::Config;
use crate::error::{ErrorClass, Failure};

pub async fn archive(cfg: &Config, export: Option<&Path>) -> Result<(), Failure> {
    let r = super::archive(cfg, export).await?;
    println!(
        "archived: {} records read, {} new, {} past retention removed, {} exported",
        r.consumed, r.inserted, r.expired, r.exported
    );
    Ok(())
}

/// Exit 1 (definite) when any chain fails.
pub async fn verify(cfg: &Config) -> Result<(), Failure> {
    let problems = super::verify_archive(cfg).await?;
    if problems.is_empty() {
        println!("audit chains verified: no altered, inserted, missing or truncated record");
        return Ok(());
    }
    for x in &problems {
        println!("FAILED: {x}");
    }
    Err(Failure::new(
        ErrorClass::Definite,
        format!("{} chain problems", problems.len()),
    ))
}

pub async fn query(
    cfg: &Config,
    from: &str,
    to: &str,
    table: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    for r in super::query(cfg, from, to, table).await? {
        if json {
            println!("{r}");
        } else {
            println!(
                "{} {} {} {}",
                r["at"].as_str().unwrap_or(""),
                r["record_id"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
                r["body"]
            );
        }
    }
    Ok(())
}

/// Exit 1 (definite) when the chain check fails or the scanner saw PHI that day.
pub async fn prove(cfg: &Config, date: &str, json: bool) -> Result<(), Failure> {
    let report = super::prove(cfg, date).await?;
    let ok = report["chain"]["ok"] == true && report["scanner"]["clean"] == true;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", super::prove_text(&report));
    }
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            ErrorClass::Definite,
            format!("the proof for {date} does not hold (chain or scanner)"),
        ))
    }
}
