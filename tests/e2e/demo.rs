//! `veil demo --for …` as a user runs it: the terminal shows the demo's own lines (logs go to a
//! file it names), the side by side shows the same patients on both sides, the held column is
//! shown held, approved and resumed, and the run ends verified with the audit proof.

#[test]
fn the_demo_tells_its_story_on_the_terminal() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["demo", "--for", "30s", "--patients", "300"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    let first = text.lines().next().unwrap_or("");
    let log = first
        .strip_prefix("veil demo: logs go to ")
        .unwrap_or_else(|| panic!("the first line names the log file: {first}"));
    assert!(std::fs::metadata(log).is_ok_and(|m| m.len() > 0), "{log}");
    // No log lines or server notices on the terminal.
    for bad in [" INFO ", " WARN ", "NOTICE", "\u{1b}["] {
        assert!(
            !text.contains(bad) && !err.contains(bad),
            "{bad:?} on the terminal:\n{text}{err}"
        );
    }
    // The side by side: each production patient beside its own dev row (same encounters).
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" | ") && !l.contains("PRODUCTION") && !l.contains("-+-"))
        .collect();
    assert!(rows.len() >= 6, "{text}");
    for r in &rows {
        let (left, right) = r.split_once(" | ").unwrap();
        let n = |s: &str| s.split_whitespace().last().unwrap_or("").to_owned();
        assert_eq!(n(left), n(right), "row-aligned: {r}");
        let id = |s: &str| s.split_whitespace().next().unwrap_or("").to_owned();
        assert_ne!(id(left), id(right), "dev ids are tokens: {r}");
    }
    for want in [
        "HELD on public.patients.alt_ssn",
        "review page: http://127.0.0.1:",
        "proposal: sensitive, rule ssn",
        "approved by demo-reviewer (rule ssn); the stream resumed",
        "(0 equal to a production SSN)",
        "chain check: verified",
        "veil demo: OK",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
}
