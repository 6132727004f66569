//! `veil audit prove --date D`: what dev held on day D, from the archive — windows and the
//! sink's confirmations, registry versions, rules per column, scanner results, holds, decisions,
//! reveals, and the chain check.

use std::collections::BTreeMap;

use super::archive::{archive_client, pg, verify_archive};
use super::error::AuditError;

/// `veil audit prove --date D`: what made up dev on that day, from the archive alone.
pub async fn prove(
    cfg: &crate::config::Config,
    date: &str,
) -> Result<serde_json::Value, AuditError> {
    use serde_json::json;
    let well_formed = crate::civil::is_iso_date(date);
    if !well_formed {
        return Err(AuditError::Config(format!(
            "--date {date:?}: expected a calendar date YYYY-MM-DD"
        )));
    }
    let client = archive_client(cfg).await?;
    let day = |sql: &str| sql.replace("$D", "$1::text::date");
    let q = |rows: Vec<tokio_postgres::Row>| -> Vec<serde_json::Value> {
        rows.iter()
            .filter_map(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
            .collect()
    };
    let windows = q(client
        .query(
            &day("SELECT json_build_object('record_id', record_id, 'at', at, 'window', body)::text FROM veil_audit.records \
                  WHERE kind = 'window' AND at >= $D AND at < $D + 1 ORDER BY at"),
            &[&date],
        )
        .await
        .map_err(pg("windows"))?);
    // The runs that produced dev that day: every run start up to the end of the day, latest
    // per chain first.
    let runs = q(client
        .query(
            &day("SELECT json_build_object('record_id', record_id, 'at', at, 'run', body)::text FROM veil_audit.records \
                  WHERE kind = 'run_start' AND at < $D + 1 ORDER BY at DESC"),
            &[&date],
        )
        .await
        .map_err(pg("runs"))?);
    let events = q(client
        .query(
            &day("SELECT json_build_object('record_id', record_id, 'at', at, 'kind', kind, 'body', body)::text FROM veil_audit.records \
                  WHERE kind IN ('hold', 'decision', 'reveal', 'error', 'run_stop', 'reclassified', 'rows_missing') AND at >= $D AND at < $D + 1 ORDER BY at"),
            &[&date],
        )
        .await
        .map_err(pg("events"))?);
    // The sink's confirmations up to the end of the day: a window is confirmed when dev
    // committed its last LSN (same epoch).
    let applied = q(client
        .query(
            &day(
                "SELECT body::text FROM veil_audit.records WHERE kind = 'applied' AND at < $D + 2",
            ),
            &[&date],
        )
        .await
        .map_err(pg("confirmations"))?);
    let parse_lsn =
        |v: &serde_json::Value| v.as_str().and_then(crate::pg::lsn::parse_lsn).unwrap_or(0);
    let mut windows = windows;
    let mut confirmed = 0;
    for w in windows.iter_mut() {
        let last = parse_lsn(&w["window"]["last_lsn"]);
        let epoch = w["window"]["epoch"].as_u64().unwrap_or(0);
        let ok = applied.iter().any(|a| {
            a["epoch"].as_u64() == Some(epoch) && parse_lsn(&a["last_commit_lsn"]) >= last
        });
        if ok {
            confirmed += 1;
        }
        w["confirmed_by_sink"] = json!(ok);
    }
    let mut hits = Vec::new();
    let mut rows_total = 0u64;
    let mut registry_versions = std::collections::BTreeSet::new();
    let mut rules: BTreeMap<String, String> = BTreeMap::new();
    for w in &windows {
        let b = &w["window"];
        registry_versions.insert(b["registry_version"].as_str().unwrap_or("").to_owned());
        for r in b["rows"].as_array().into_iter().flatten() {
            rows_total += r["rows"].as_u64().unwrap_or(0);
        }
        for r in b["rules"].as_array().into_iter().flatten() {
            rules.insert(
                format!(
                    "{}.{}",
                    r["table"].as_str().unwrap_or(""),
                    r["column"].as_str().unwrap_or("")
                ),
                r["rule"].as_str().unwrap_or("").to_owned(),
            );
        }
        for s in b["scanner"].as_array().into_iter().flatten() {
            hits.push(s.clone());
        }
    }
    let scanned: u64 = windows
        .iter()
        .map(|w| w["window"]["scanned_rows"].as_u64().unwrap_or(0))
        .sum();
    let problems = verify_archive(cfg).await?;
    let latest_run = runs.first().cloned().unwrap_or(serde_json::Value::Null);
    let dataset = latest_run
        .get("run")
        .map(|r| {
            format!(
                "{}/epoch {}",
                r["source_id"].as_str().unwrap_or(""),
                r["epoch"]
            )
        })
        .unwrap_or_default();
    let scanner_holds: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "hold" && e["body"]["cause"] == "scanner")
        .collect();
    let clean = hits.is_empty() && scanner_holds.is_empty();
    Ok(json!({
        "date": date,
        "dataset": dataset,
        "windows": windows.len(),
        "windows_confirmed_by_sink": confirmed,
        "rows_published": rows_total,
        "registry_versions": registry_versions,
        "rules": rules,
        "run": latest_run,
        "scanner": { "rows_scanned": scanned, "hits_in_safe_columns": hits, "clean": clean },
        "holds_and_decisions": events,
        "chain": { "ok": problems.is_empty(), "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>() },
        "window_list": windows,
    }))
}

/// The prove report for people.
pub fn prove_text(r: &serde_json::Value) -> String {
    let mut out = String::new();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    out.push_str(&format!("veil audit report for {}\n", s(&r["date"])));
    out.push_str(&format!("dev dataset: {}\n", s(&r["dataset"])));
    out.push_str(&format!(
        "windows: {} ({} rows published; {} confirmed applied by the sink)\n",
        r["windows"], r["rows_published"], r["windows_confirmed_by_sink"]
    ));
    for w in r["window_list"].as_array().into_iter().flatten() {
        let b = &w["window"];
        out.push_str(&format!(
            "  {}  LSN {} .. {}  registry {}  scanned {}{}\n",
            s(&b["window_id"]),
            s(&b["first_lsn"]),
            s(&b["last_lsn"]),
            s(&b["registry_version"]),
            b["scanned_rows"],
            if w["confirmed_by_sink"] == true {
                "  applied in dev"
            } else {
                "  not confirmed by the sink"
            }
        ));
    }
    out.push_str(&format!("registry versions: {}\n", r["registry_versions"]));
    out.push_str("rules per column:\n");
    for (c, rule) in r["rules"].as_object().into_iter().flatten() {
        out.push_str(&format!("  {c}: {}\n", rule.as_str().unwrap_or("")));
    }
    out.push_str(&format!(
        "scanner: {} rows scanned; {}\n",
        r["scanner"]["rows_scanned"],
        if r["scanner"]["clean"] == true {
            "no PHI detector hit in a safe column".to_owned()
        } else {
            format!(
                "hits in safe columns: {}",
                r["scanner"]["hits_in_safe_columns"]
            )
        }
    ));
    let events = r["holds_and_decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out.push_str(&format!(
        "holds, decisions, reveals, errors, stops: {}\n",
        events.len()
    ));
    let loosening = events
        .iter()
        .filter(|e| e["kind"] == "decision" && e["body"]["loosens"] == true)
        .count();
    if loosening > 0 {
        out.push_str(&format!(
            "loosening decisions (less protection than before): {loosening}\n"
        ));
    }
    for e in events {
        let kind = match (s(&e["kind"]).as_str(), e["body"]["loosens"] == true) {
            ("decision", true) => "decision LOOSENS".to_owned(),
            (k, _) => k.to_owned(),
        };
        out.push_str(&format!("  {} {} {}\n", s(&e["at"]), kind, e["body"]));
    }
    out.push_str(&format!(
        "chain check: {}\n",
        if r["chain"]["ok"] == true {
            "verified".to_owned()
        } else {
            format!("FAILED {}", r["chain"]["problems"])
        }
    ));
    out
}
