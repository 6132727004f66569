//! What the stream tells the audit trail, built without I/O: the run's start (every column's
//! rule), windows (what was published, under which rules, what the scanner saw) and decisions
//! (every registry entry that changed). Records carry names, rules, counts and LSNs — never a
//! value.

use std::collections::BTreeMap;

use crate::deid::gate::TablePlan;
use crate::deid::registry::{Decision, Registry, Rule};
use crate::proto;

/// What the current audit window has published so far.
#[derive(Default)]
pub struct WindowAcc {
    pub start_us: i64,
    pub first_lsn: u64,
    pub last_lsn: u64,
    /// table → operation → rows (looked up by `&str`: no allocation per row).
    pub rows: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub scanned: u64,
    pub hits: BTreeMap<(String, String, &'static str), u64>,
}

impl WindowAcc {
    pub fn starting(start_us: i64) -> Self {
        WindowAcc {
            start_us,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.scanned == 0
    }

    /// Counts published rows.
    pub fn count_rows(&mut self, table: &str, op: &'static str, n: u64) {
        let ops = match self.rows.get_mut(table) {
            Some(ops) => ops,
            None => self.rows.entry(table.to_owned()).or_default(),
        };
        *ops.entry(op).or_default() += n;
    }

    /// Marks an LSN published in this window (a commit, or the snapshot's point).
    pub fn mark_lsn(&mut self, lsn: u64) {
        if self.first_lsn == 0 {
            self.first_lsn = lsn;
        }
        self.last_lsn = lsn;
    }

    /// The window record. `plans`: the current plans (for the rules of the tables published).
    pub fn into_record<'p>(
        self,
        window_id: String,
        run_id: u64,
        epoch: u64,
        end_us: i64,
        registry_version: &str,
        plans: impl Iterator<Item = &'p TablePlan>,
    ) -> proto::Window {
        let mut per_table: BTreeMap<&str, u64> = BTreeMap::new();
        for (t, ops) in &self.rows {
            *per_table.entry(t.as_str()).or_default() += ops.values().sum::<u64>();
        }
        let mut rules = Vec::new();
        for plan in plans {
            if let Some(n) = per_table.get(plan.qualified.as_str()) {
                for c in &plan.schema.columns {
                    rules.push(proto::RuleCount {
                        table: plan.qualified.clone(),
                        column: c.name.clone(),
                        rule: c.rule.clone(),
                        values: *n,
                    });
                }
            }
        }
        rules.sort_by(|a, b| (&a.table, &a.column).cmp(&(&b.table, &b.column)));
        proto::Window {
            window_id,
            run_id,
            epoch,
            start_us: self.start_us,
            end_us,
            first_lsn: self.first_lsn,
            last_lsn: self.last_lsn,
            registry_version: registry_version.to_owned(),
            rows: self
                .rows
                .iter()
                .flat_map(|(t, ops)| {
                    ops.iter().map(move |(op, n)| proto::OpCount {
                        table: t.clone(),
                        op: (*op).into(),
                        rows: *n,
                    })
                })
                .collect(),
            rules,
            scanned_rows: self.scanned,
            scanner: self
                .hits
                .iter()
                .map(|((t, c, d), n)| proto::ScanResult {
                    table: t.clone(),
                    column: c.clone(),
                    detector: (*d).into(),
                    hits: *n,
                })
                .collect(),
        }
    }
}

/// Every column's rule and profile under `registry` (for the run's start record).
pub fn column_rules(registry: &Registry) -> Vec<proto::ColumnRule> {
    let mut rules = Vec::new();
    for (t, e) in &registry.tables {
        for (c, ce) in &e.columns {
            rules.push(proto::ColumnRule {
                table: t.clone(),
                column: c.clone(),
                rule: match &ce.decision {
                    Decision::Blocked => "blocked".into(),
                    Decision::Publish(r) => r.describe(),
                },
                profile: ce.profile.name().into(),
            });
        }
    }
    rules
}

/// A decision record for every table blocked and every column whose entry changed between
/// `before` and `after` (who decided, when, why).
pub fn decisions(before: &Registry, after: &Registry) -> Vec<proto::Decision> {
    let mut bodies = Vec::new();
    for (t, e) in &after.tables {
        let old = before.table(t);
        if e.blocked && !old.is_some_and(|o| o.blocked) {
            bodies.push(proto::Decision {
                table: t.clone(),
                column: "*".into(),
                class: "blocked".into(),
                rule: String::new(),
                reviewer: e.reviewer.clone().unwrap_or_default(),
                reviewed_at: String::new(),
                reason: e.reason.clone().unwrap_or_default(),
                registry_before: before.version.clone(),
                registry_after: after.version.clone(),
            });
        }
        for (c, ce) in &e.columns {
            let same = old.and_then(|o| o.columns.get(c)).is_some_and(|o| {
                o.decision == ce.decision
                    && o.type_name == ce.type_name
                    && o.profile == ce.profile
                    && o.reviewed_at == ce.reviewed_at
                    && o.scan == ce.scan
            });
            if same {
                continue;
            }
            let (class, rule) = match &ce.decision {
                Decision::Blocked => ("blocked", String::new()),
                Decision::Publish(Rule::Keep) => ("safe", "keep".into()),
                Decision::Publish(r) => ("sensitive", r.describe()),
            };
            bodies.push(proto::Decision {
                table: t.clone(),
                column: c.clone(),
                class: class.into(),
                rule,
                reviewer: ce.reviewer.clone().unwrap_or_default(),
                reviewed_at: ce.reviewed_at.clone().unwrap_or_default(),
                reason: ce.reason.clone().unwrap_or_default(),
                registry_before: before.version.clone(),
                registry_after: after.version.clone(),
            });
        }
    }
    bodies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_rows_and_lsns() {
        let mut w = WindowAcc::starting(5);
        assert!(w.is_empty());
        w.count_rows("public.t", "INSERT", 2);
        w.count_rows("public.t", "INSERT", 1);
        w.count_rows("public.t", "DELETE", 1);
        w.mark_lsn(10);
        w.mark_lsn(20);
        let r = w.into_record("x-1".into(), 1, 2, 9, "v1", std::iter::empty());
        assert_eq!(
            (r.first_lsn, r.last_lsn, r.start_us, r.end_us),
            (10, 20, 5, 9)
        );
        let ins = r.rows.iter().find(|o| o.op == "INSERT").unwrap();
        assert_eq!(ins.rows, 3);
    }
}
