//! The one SQL quoting helper: identifiers and literals as PostgreSQL's `quote_ident` and
//! `quote_literal` (standard_conforming_strings on) produce them.

/// `na"me` → `"na""me"` (always quoted, so case and keywords are kept).
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `schema.table` → `"schema"."table"` (split at the first dot; a name without one is quoted
/// whole).
pub fn qualified(q: &str) -> String {
    match q.split_once('.') {
        Some((s, t)) => format!("{}.{}", ident(s), ident(t)),
        None => ident(q),
    }
}

/// `it's` → `'it''s'`.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_postgres() {
        assert_eq!(ident("Mixed\"Case"), "\"Mixed\"\"Case\"");
        assert_eq!(qualified("public.t"), "\"public\".\"t\"");
        assert_eq!(qualified("nodot"), "\"nodot\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
