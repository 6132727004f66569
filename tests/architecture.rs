//! The house rules of ARCHITECTURE.md, checked over the source text of the workspace
//! (`src/` and `crates/*/src/`, as one namespace: the root crate re-exports `veil-core`'s
//! modules, `veil-deid` as `deid` and `veil-sink` as `sink`), and over the manifests:
//! - `veil-sink` and `veil-core` cannot reach `veil-deid` through their dependencies
//!   (`cargo metadata`);
//! - no import circle between modules (file level) nor between folders;
//! - the sink side (`sink::*` and every module it reaches) never depends on `deid` (registry,
//!   gate, tokenization, vault), the production side (`source`), `review` or `devkit`, and none
//!   of its files names the master key;
//! - nothing in the data path depends on `devkit`.
//!
//! Every `crate::…`, `super::…` and `self::…` path is read, in `use` trees and inline (code
//! under `#[cfg(test)] mod tests` is left out: tests may use the test kit). A path resolves to
//! the longest module prefix it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Where a crate's `src/` is and the module prefix its files get in the unified namespace.
const CRATES: &[(&str, &str)] = &[
    ("src", ""),
    ("crates/veil-core/src", ""),
    ("crates/veil-deid/src", "deid"),
    ("crates/veil-sink/src", "sink"),
];

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a` (under the crate's prefix); `None` for a crate
/// root of the root crate, the binary and separate test files.
fn module_of(src: &Path, prefix: &str, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    if parts == ["main"]
        || parts.first().is_some_and(|p| p == "bin")
        || parts.last().is_some_and(|l| l == "tests")
    {
        return None;
    }
    if !prefix.is_empty() {
        parts.insert(0, prefix.to_owned());
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("::"))
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests` block.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod tests {"))
        {
            // Tests sit at the end of the file (checked: nothing after them is code we read).
            break;
        }
        let code = match line.find("//") {
            // Keep "://" inside strings (URLs) from cutting a line short of a path.
            Some(i) if !line[..i].ends_with(':') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands a `use` tree (`crate::{a::{self, B}, c}`) into paths.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
    } else if !tree.is_empty() {
        let tree = tree.split(" as ").next().unwrap().trim();
        let p = if tree == "self" {
            prefix.to_owned()
        } else {
            join(prefix, tree)
        };
        out.push(p);
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}::{b}"),
    }
}

fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` trees.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_')
            && let Some(end) = after.find(';')
        {
            let tree: String = after[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if tree.starts_with("crate::")
                || tree.starts_with("super::")
                || tree.starts_with("self::")
            {
                expand("", &tree, &mut out);
            }
        }
        rest = after;
    }
    // Inline paths.
    let bytes = code.as_bytes();
    for kw in ["crate::", "super::", "self::", "veil_core::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(kw) {
            let at = from + i;
            from = at + kw.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let mut end = at;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            let p = code[at..end].trim_end_matches(':');
            if p.contains("::") {
                out.push(p.to_owned());
            }
        }
    }
    out
}

/// The module a path names, from module `here` of the crate whose modules carry `prefix`
/// (`None`: external or a crate root).
fn resolve(here: &str, prefix: &str, path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut base: Vec<&str> = if here.is_empty() {
        Vec::new()
    } else {
        here.split("::").collect()
    };
    match segs[0] {
        "crate" => {
            base = if prefix.is_empty() {
                vec![]
            } else {
                vec![prefix]
            };
            segs.remove(0);
        }
        "veil_core" => {
            base.clear();
            segs.remove(0);
        }
        "self" => {
            segs.remove(0);
        }
        "super" => {
            while segs.first() == Some(&"super") {
                segs.remove(0);
                base.pop();
            }
        }
        _ => return None,
    }
    let longest = |mut full: Vec<&str>| {
        while !full.is_empty() {
            let cand = full.join("::");
            if modules.contains(&cand) {
                return Some(cand);
            }
            full.pop();
        }
        None
    };
    let mut full = base.clone();
    full.extend(segs.iter().copied());
    // `crate::config` inside veil-deid is veil-core's `config`, re-exported at the crate root.
    match longest(full) {
        Some(m) if !prefix.is_empty() && m == prefix && !segs.is_empty() => longest(segs),
        found => found,
    }
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    text: BTreeMap<String, String>,
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut modules = BTreeSet::new();
    let mut files = Vec::new();
    for (dir, prefix) in CRATES {
        let src = root.join(dir);
        let mut fs = Vec::new();
        rust_files(&src, &mut fs);
        for f in fs {
            if let Some(m) = module_of(&src, prefix, &f) {
                modules.insert(m.clone());
                files.push((m, *prefix, f));
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut text = BTreeMap::new();
    for (m, prefix, f) in &files {
        let raw = std::fs::read_to_string(f).unwrap();
        let code = code_of(&raw);
        let e = edges.entry(m.clone()).or_default();
        for p in paths_in(&code) {
            if let Some(t) = resolve(m, prefix, &p, &modules)
                && &t != m
                // A crate root's re-exports (`pub(crate) use veil_core::…`) are names, not
                // dependencies of its own.
                && !(m == prefix && !prefix.is_empty() && !t.starts_with(prefix))
            {
                e.insert(t);
            }
        }
        text.insert(m.clone(), code);
    }
    Graph { edges, text }
}

fn reach(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(n) = stack.pop() {
        for t in g.get(&n).into_iter().flatten() {
            if seen.insert(t.clone()) {
                stack.push(t.clone());
            }
        }
    }
    seen
}

/// Every cycle's members (strongly connected components of more than one node).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if done.contains(n) {
            continue;
        }
        let fwd = reach(g, n);
        if !fwd.contains(n) {
            continue;
        }
        let comp: Vec<String> = fwd
            .iter()
            .filter(|m| reach(g, m).contains(n))
            .cloned()
            .collect();
        for c in &comp {
            done.insert(c.clone());
        }
        out.push(comp);
    }
    out
}

fn folder(m: &str) -> String {
    m.split("::").next().unwrap().to_owned()
}

#[test]
fn the_path_reader_reads_use_trees_and_inline_paths() {
    let code = "use crate::{a::{self, B}, c::d as e};\nuse super::x::Y;\nfn f() { crate::g::h(); let _ = \"postgres://u@h/db\"; }\n";
    let p = paths_in(code);
    for want in [
        "crate::a",
        "crate::a::B",
        "crate::c::d",
        "super::x::Y",
        "crate::g::h",
    ] {
        assert!(p.iter().any(|x| x == want), "{want} not in {p:?}");
    }
    let mods: BTreeSet<String> = ["a", "a::b", "c", "g"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        resolve("a::b", "", "super::Thing", &mods).as_deref(),
        Some("a")
    );
    assert_eq!(
        resolve("x", "", "crate::a::b::Z", &mods).as_deref(),
        Some("a::b")
    );
    let mods: BTreeSet<String> = ["deid", "deid::gate", "config", "pg::tls", "pg"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        resolve("deid::gate", "deid", "crate::config::Config", &mods).as_deref(),
        Some("config")
    );
    assert_eq!(
        resolve("deid::gate", "deid", "crate::pg::tls::x", &mods).as_deref(),
        Some("pg::tls")
    );
    assert_eq!(
        resolve("deid::vault", "deid", "crate::gate::G", &mods).as_deref(),
        Some("deid::gate")
    );
    assert_eq!(
        resolve("deid::vault", "deid", "veil_core::pg::x", &mods).as_deref(),
        Some("pg")
    );
    let c = cycles(&BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]));
    assert_eq!(c, vec![vec!["a".to_string(), "b".to_string()]]);
}

#[test]
fn no_import_circles_between_modules_or_folders() {
    let g = graph();
    assert!(
        g.edges.len() > 30,
        "the module graph looks empty: {:?}",
        g.edges.keys()
    );
    let c = cycles(&g.edges);
    assert!(c.is_empty(), "import circles between modules: {c:?}");
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, ts) in &g.edges {
        for t in ts {
            if folder(m) != folder(t) {
                folders.entry(folder(m)).or_default().insert(folder(t));
            }
        }
    }
    let c = cycles(&folders);
    assert!(
        c.is_empty(),
        "import circles between folders: {c:?}\n{folders:#?}"
    );
}

#[test]
fn the_sink_side_cannot_reach_keys_vault_or_production_code() {
    let g = graph();
    let sink: Vec<&String> = g.edges.keys().filter(|m| folder(m) == "sink").collect();
    assert!(sink.len() >= 4, "sink modules: {sink:?}");
    let mut closure: BTreeSet<String> = sink.iter().map(|s| s.to_string()).collect();
    for m in &sink {
        closure.extend(reach(&g.edges, m));
    }
    for m in &closure {
        let f = folder(m);
        assert!(
            !["deid", "source", "review", "devkit"].contains(&f.as_str()),
            "the sink side reaches {m} (closure: {closure:?})"
        );
        let code = &g.text[m];
        for word in [
            "MasterKey",
            "fn master_key",
            "DomainKey",
            "TokenStore",
            "TokenVault",
            "VaultRequest",
        ] {
            assert!(!code.contains(word), "{m}, on the sink side, names {word}");
        }
    }
    // The audit code the sink uses is in the closure, and it is checked like the sink itself.
    assert!(closure.iter().any(|m| folder(m) == "audit"), "{closure:?}");
}

#[test]
fn nothing_in_the_data_path_depends_on_the_devkit() {
    let g = graph();
    for (m, ts) in &g.edges {
        if folder(m) == "devkit" {
            continue;
        }
        for t in ts {
            assert_ne!(folder(t), "devkit", "{m} depends on {t}");
        }
    }
}

/// The dependency names of one workspace package, from `cargo metadata`.
fn package_deps(meta: &serde_json::Value, name: &str) -> Vec<String> {
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("package {name} not in the workspace"))["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_manifests_keep_the_sink_and_the_foundations_away_from_deid() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let workspace = ["veil", "veil-core", "veil-deid", "veil-sink"];
    // Every path from veil-sink (and veil-core, which it uses) through workspace crates.
    for start in ["veil-sink", "veil-core"] {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_owned()];
        while let Some(p) = stack.pop() {
            for d in package_deps(&meta, &p) {
                assert_ne!(d, "veil-deid", "{start} reaches veil-deid through {p}");
                assert_ne!(d, "veil", "{start} reaches the root crate through {p}");
                if workspace.contains(&d.as_str()) && seen.insert(d.clone()) {
                    stack.push(d);
                }
            }
        }
    }
    assert_eq!(
        package_deps(&meta, "veil-deid")
            .iter()
            .filter(|d| workspace.contains(&d.as_str()))
            .collect::<Vec<_>>(),
        ["veil-core"]
    );
}

/// One path for every published row: in the production side's non-test code, a row change is
/// built in exactly one function (`Streamer::publish_rows`), so the stream, the snapshot and the
/// backfill transform, scan, hold and count alike. A second place building `Event::Row` (or a
/// `RowChange` literal) fails here.
#[test]
fn one_function_in_the_production_side_builds_a_published_row() {
    let mut files = Vec::new();
    rust_files(Path::new("src/source"), &mut files);
    let mut builders = Vec::new();
    for f in &files {
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        let mut current_fn = String::new();
        for line in code.lines() {
            let t = line.trim_start();
            if let Some(rest) = t
                .strip_prefix("pub(super) async fn ")
                .or_else(|| t.strip_prefix("pub async fn "))
                .or_else(|| t.strip_prefix("async fn "))
                .or_else(|| t.strip_prefix("pub fn "))
                .or_else(|| t.strip_prefix("pub(super) fn "))
                .or_else(|| t.strip_prefix("fn "))
            {
                current_fn = rest.split(['(', '<']).next().unwrap_or("").to_owned();
            }
            // A pattern (`Event::Row(r) =>`) reads a row; anything else builds one.
            if t.contains("Event::Row(") && !t.contains("=>") {
                builders.push(format!("{}: {current_fn}", f.display()));
            }
            if t.contains("proto::RowChange {") {
                builders.push(format!("{}: {current_fn} (RowChange literal)", f.display()));
            }
        }
    }
    builders.sort();
    builders.dedup();
    assert_eq!(
        builders,
        vec![
            "src/source/pipeline.rs: publish_rows".to_owned(),
            "src/source/pipeline.rs: publish_rows (RowChange literal)".to_owned()
        ],
        "published rows are built outside Streamer::publish_rows"
    );
}
