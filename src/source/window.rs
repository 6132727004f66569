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
        let was_blocked = old.is_some_and(|o| o.blocked);
        if e.blocked != was_blocked && (e.blocked || old.is_some()) {
            bodies.push(proto::Decision {
                table: t.clone(),
                column: "*".into(),
                class: if e.blocked { "blocked" } else { "unblocked" }.into(),
                rule: String::new(),
                reviewer: e.reviewer.clone().unwrap_or_default(),
                reviewed_at: e.reviewed_at.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                registry_before: before.version.clone(),
                registry_after: after.version.clone(),
                previous_class: if was_blocked { "blocked" } else { "" }.into(),
                previous_rule: String::new(),
                loosens: was_blocked && !e.blocked,
            });
        }
        for (c, ce) in &e.columns {
            let prev = old.and_then(|o| o.columns.get(c));
            let same = prev.is_some_and(|o| {
                o.decision == ce.decision
                    && o.type_name == ce.type_name
                    && o.profile == ce.profile
                    && o.reviewed_at == ce.reviewed_at
                    && o.scan == ce.scan
            });
            if same {
                continue;
            }
            let (class, rule) = class_and_rule(&ce.decision);
            let (previous_class, previous_rule) = prev
                .map(|p| class_and_rule(&p.decision))
                .unwrap_or(("", String::new()));
            let loosens = prev.is_some_and(|p| {
                strength(&ce.decision) < strength(&p.decision)
                    || (p.scan && !ce.scan && ce.decision == Decision::Publish(Rule::Keep))
            });
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
                previous_class: previous_class.into(),
                previous_rule,
                loosens,
            });
        }
    }
    bodies
}

fn class_and_rule(d: &Decision) -> (&'static str, String) {
    match d {
        Decision::Blocked => ("blocked", String::new()),
        Decision::Publish(Rule::Keep) => ("safe", "keep".into()),
        Decision::Publish(r) => ("sensitive", r.describe()),
    }
}

/// Blocked > any de-identifying rule > published as is.
fn strength(d: &Decision) -> u8 {
    match d {
        Decision::Blocked => 2,
        Decision::Publish(Rule::Keep) => 0,
        Decision::Publish(_) => 1,
    }
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

    fn registry(files: &[(&str, &str)]) -> Registry {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        Registry::load(d.path()).unwrap()
    }

    #[test]
    fn loosening_decisions_are_marked_with_what_came_before() {
        let before = registry(&[
            (
                "public.t.toml",
                "table = \"public.t\"\n[columns]\n\
                 a = { type = \"text\", class = \"sensitive\", rule = \"redact\", reviewer = \"kim\", reason = \"notes\" }\n\
                 b = { type = \"text\", class = \"safe\" }\n\
                 c = { type = \"text\", class = \"safe\" }\n\
                 d = { type = \"text\", class = \"blocked\" }\n",
            ),
            ("public.u.toml", "table = \"public.u\"\nblocked = true\n"),
        ]);
        let after = registry(&[
            (
                "public.t.toml",
                "table = \"public.t\"\n[columns]\n\
                 a = { type = \"text\", class = \"safe\", reviewer = \"lee\", reason = \"no PHI after all\" }\n\
                 b = { type = \"text\", class = \"sensitive\", rule = \"redact\", reviewer = \"lee\", reason = \"x\" }\n\
                 c = { type = \"text\", class = \"safe\", scan = false, reviewer = \"lee\", reason = \"codes\" }\n\
                 d = { type = \"text\", class = \"sensitive\", rule = \"redact\", reviewer = \"lee\", reason = \"y\" }\n",
            ),
            (
                "public.u.toml",
                "table = \"public.u\"\nreviewer = \"lee\"\nreason = \"wanted\"\n",
            ),
        ]);
        let d = decisions(&before, &after);
        let find = |t: &str, c: &str| {
            d.iter()
                .find(|x| x.table == t && x.column == c)
                .unwrap_or_else(|| panic!("no record for {t}.{c}"))
        };
        let a = find("public.t", "a");
        assert!(a.loosens && a.previous_class == "sensitive" && a.class == "safe");
        assert_eq!(a.reason, "no PHI after all");
        assert!(!find("public.t", "b").loosens, "safe → sensitive tightens");
        assert!(find("public.t", "c").loosens, "scanner turned off");
        let dd = find("public.t", "d");
        assert!(dd.loosens && dd.previous_class == "blocked");
        let u = find("public.u", "*");
        assert!(u.loosens && u.class == "unblocked" && u.reviewer == "lee");
        // A new table's first decisions loosen nothing.
        let fresh = decisions(&Registry::default(), &before);
        assert!(fresh.iter().all(|x| !x.loosens));
    }
}
