//! Scanner holds that hold (**pure**): which published rows the in-flight scanner looks at, and
//! when a hold it caused may end.
//!
//! | rule | why |
//! | --- | --- |
//! | a row is sampled by a hash of its scanned values (SipHash, fixed keys), not by a running counter | the same row is sampled the same way in any batch, after a replan and after a restart |
//! | a hit holds its (table, column) until that column's decision differs from the one it hit under (a new rule, `scan = false`, blocked, or the table re-decided) | an unrelated registry change never releases it |
//! | while a (table, column) is held, every row of its table is scanned | nothing of it is let through by the sample |
//! | the tables of a held batch are scanned whole until a scan of their rows comes out clean | the held batch is scanned whole when it resumes, wherever it comes from (queue, snapshot batch, backfill chunk read again) |
//! | holds are kept with the stream's state (`_veil.scan_holds`) and loaded at start | a restart while held stays held |

use std::collections::{BTreeMap, BTreeSet};

use crate::deid::registry::Registry;

/// What the column's decision is, as a short digest: a hold ends when it changes.
pub fn fingerprint(registry: &Registry, table: &str, column: &str) -> String {
    let text = match registry.table(table) {
        None => "no table decision".to_owned(),
        Some(t) if t.blocked => "table blocked".to_owned(),
        Some(t) => match t.columns.get(column) {
            None => "no column decision".to_owned(),
            Some(c) => format!(
                "{:?}|{}|scan={}|{:?}|{:?}|{:?}",
                c.decision, c.type_name, c.scan, c.profile, c.reviewer, c.reviewed_at
            ),
        },
    };
    blake3::hash(text.as_bytes()).to_hex()[..16].to_owned()
}

/// The scanner's sample and its holds.
#[derive(Debug, Default)]
pub struct ScanHolds {
    /// Scan one row in `every` (0 = the scanner is off, 1 = every row).
    every: u64,
    /// (table, column) held → the column's decision fingerprint when it hit.
    held: BTreeMap<(String, String), String>,
    /// Tables whose rows are scanned whole until a scan of them comes out clean.
    whole: BTreeSet<String>,
    /// The tables of the last batch that hit.
    last_hit_batch: BTreeSet<String>,
}

impl ScanHolds {
    /// `sample` is `[scanner] in_flight_sample` (the share of rows scanned).
    pub fn new(sample: f64) -> Self {
        let every = if sample <= 0.0 || sample.is_nan() {
            0
        } else {
            (1.0 / sample.min(1.0)).round().max(1.0) as u64
        };
        ScanHolds {
            every,
            ..Default::default()
        }
    }

    pub fn off(&self) -> bool {
        self.every == 0
    }

    /// Whether a row of `table` whose scanned (column, value) pairs are `values` is scanned.
    pub fn sampled(&self, table: &str, values: &[(&str, &str)]) -> bool {
        self.sampled_iter(table, values.iter().copied())
    }

    /// [`ScanHolds::sampled`] over an iterator (no allocation for rows left out).
    pub fn sampled_iter<'v>(
        &self,
        table: &str,
        values: impl Iterator<Item = (&'v str, &'v str)>,
    ) -> bool {
        if self.every == 0 {
            return false;
        }
        let mut values = values.peekable();
        if values.peek().is_none() {
            return false;
        }
        if self.every == 1 || self.scans_whole(table) {
            return true;
        }
        // SipHash with fixed keys: the same row gives the same answer in every run of a build
        // (it runs for every row, so it is the cheap hash; nothing secret depends on it).
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        table.hash(&mut h);
        for (c, v) in values {
            c.hash(&mut h);
            v.hash(&mut h);
        }
        h.finish().is_multiple_of(self.every)
    }

    /// Every row of `table` is scanned (a column of it is held, or a held batch resumes).
    pub fn scans_whole(&self, table: &str) -> bool {
        (!self.whole.is_empty() && self.whole.contains(table))
            || (!self.held.is_empty() && self.held.keys().any(|(t, _)| t == table))
    }

    /// A scan of a batch with rows of `tables` found `hit` (table, column) pairs. Returns the
    /// pairs newly held (to be kept with the stream's state), with their fingerprints.
    pub fn scanned(
        &mut self,
        tables: BTreeSet<String>,
        hit: &[(String, String)],
        registry: &Registry,
    ) -> Vec<(String, String, String)> {
        if hit.is_empty() {
            for t in &tables {
                self.whole.remove(t);
            }
            return Vec::new();
        }
        self.last_hit_batch = tables;
        let mut new = Vec::new();
        for (t, c) in hit {
            if let std::collections::btree_map::Entry::Vacant(e) =
                self.held.entry((t.clone(), c.clone()))
            {
                let fp = fingerprint(registry, t, c);
                e.insert(fp.clone());
                new.push((t.clone(), c.clone(), fp));
            }
        }
        new
    }

    /// A hold loaded from the stream's state (a predecessor's).
    pub fn restore(&mut self, table: String, column: String, fingerprint: String) {
        self.held.insert((table, column), fingerprint);
    }

    /// Ends the holds whose column has a new decision under `registry`; the tables of the last
    /// held batch are then scanned whole until clean. Returns the pairs released.
    pub fn release_decided(&mut self, registry: &Registry) -> Vec<(String, String)> {
        let released: Vec<(String, String)> = self
            .held
            .iter()
            .filter(|((t, c), fp)| fingerprint(registry, t, c) != **fp)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &released {
            self.held.remove(k);
            self.whole.insert(k.0.clone());
        }
        if !released.is_empty() {
            self.whole.extend(self.last_hit_batch.iter().cloned());
        }
        released
    }

    /// Whether any of `pairs` is still held.
    pub fn any_held(&self, pairs: &[(String, String)]) -> bool {
        pairs.iter().any(|p| self.held.contains_key(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("public.notes.toml"), text).unwrap();
        std::fs::write(
            dir.path().join("public.other.toml"),
            "table = \"public.other\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n",
        )
        .unwrap();
        Registry::load(dir.path()).unwrap()
    }

    const KEEP: &str = "table = \"public.notes\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
                        label = { type = \"text\", class = \"safe\" }\n";
    const REDACT: &str = "table = \"public.notes\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
                          label = { type = \"text\", class = \"sensitive\", rule = \"redact\" }\n";
    const NO_SCAN: &str = "table = \"public.notes\"\n[columns]\nid = { type = \"integer\", class = \"safe\" }\n\
                           label = { type = \"text\", class = \"safe\", scan = false }\n";

    fn hit() -> Vec<(String, String)> {
        vec![("public.notes".into(), "label".into())]
    }

    #[test]
    fn sampling_depends_on_the_row_not_on_what_came_before() {
        let s = ScanHolds::new(0.5);
        let rows: Vec<String> = (0..200).map(|i| format!("row {i}")).collect();
        let first: Vec<bool> = rows
            .iter()
            .map(|r| s.sampled("public.notes", &[("label", r)]))
            .collect();
        // Again, in another order: each row sampled as before.
        for (i, r) in rows.iter().enumerate().rev() {
            assert_eq!(s.sampled("public.notes", &[("label", r)]), first[i]);
        }
        let n = first.iter().filter(|b| **b).count();
        assert!((60..140).contains(&n), "about half sampled: {n}");
    }

    #[test]
    fn off_scans_nothing_and_one_scans_everything() {
        assert!(!ScanHolds::new(0.0).sampled("t", &[("c", "x")]));
        assert!(ScanHolds::new(1.0).sampled("t", &[("c", "x")]));
        assert!(!ScanHolds::new(1.0).sampled("t", &[]));
    }

    #[test]
    fn an_unrelated_registry_change_does_not_release_a_hold() {
        let mut s = ScanHolds::new(0.01);
        let r = registry(KEEP);
        let new = s.scanned(["public.notes".into()].into(), &hit(), &r);
        assert_eq!(new.len(), 1);
        // Another table decided: still held.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("public.notes.toml"), KEEP).unwrap();
        std::fs::write(
            dir.path().join("public.other.toml"),
            "table = \"public.other\"\n[columns]\nid = { type = \"integer\", class = \"sensitive\", rule = \"tokenize\", domain = \"other\" }\n",
        )
        .unwrap();
        let other = Registry::load(dir.path()).unwrap();
        assert_ne!(other.version, r.version);
        assert!(s.release_decided(&other).is_empty());
        assert!(s.any_held(&hit()));
    }

    #[test]
    fn a_held_table_is_scanned_whole() {
        let mut s = ScanHolds::new(0.000_001);
        let r = registry(KEEP);
        assert!(!s.sampled("public.notes", &[("label", "x")]));
        s.scanned(["public.notes".into()].into(), &hit(), &r);
        assert!(s.sampled("public.notes", &[("label", "x")]));
        assert!(!s.sampled("public.other", &[("label", "x")]));
    }

    #[test]
    fn a_new_rule_or_scan_false_releases_and_the_batch_is_scanned_whole_until_clean() {
        for text in [REDACT, NO_SCAN] {
            let mut s = ScanHolds::new(0.000_001);
            s.scanned(
                ["public.notes".into(), "public.other".into()].into(),
                &hit(),
                &registry(KEEP),
            );
            let released = s.release_decided(&registry(text));
            assert_eq!(released, hit());
            assert!(!s.any_held(&hit()));
            // The held batch's tables: whole until a clean scan.
            assert!(s.sampled("public.other", &[("x", "y")]));
            s.scanned(["public.other".into()].into(), &[], &registry(text));
            assert!(!s.sampled("public.other", &[("x", "y")]));
            assert!(s.sampled("public.notes", &[("x", "y")]));
        }
    }

    #[test]
    fn a_restored_hold_ends_only_with_a_new_decision() {
        let r = registry(KEEP);
        let mut s = ScanHolds::new(0.05);
        s.restore(
            "public.notes".into(),
            "label".into(),
            fingerprint(&r, "public.notes", "label"),
        );
        assert!(s.release_decided(&r).is_empty());
        assert!(s.scans_whole("public.notes"));
        assert_eq!(s.release_decided(&registry(REDACT)).len(), 1);
    }

    #[test]
    fn a_second_hit_keeps_the_first_fingerprint() {
        let mut s = ScanHolds::new(0.5);
        let r = registry(KEEP);
        assert_eq!(
            s.scanned(["public.notes".into()].into(), &hit(), &r).len(),
            1
        );
        assert!(
            s.scanned(["public.notes".into()].into(), &hit(), &r)
                .is_empty()
        );
    }
}
