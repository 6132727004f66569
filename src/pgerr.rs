//! PostgreSQL errors turned into text that never carries a row value.

/// A server error without row values: the DETAIL field (which quotes keys) is never used, and
/// for data exceptions (class 22) and integrity violations (class 23), whose messages can quote
/// the offending value, only the code and the names of the table, column, constraint and type
/// are kept.
fn safe_db_message(d: &tokio_postgres::error::DbError) -> String {
    let code = d.code().code();
    if code.starts_with("22") || code.starts_with("23") {
        let mut parts = vec![format!("SQLSTATE {code}")];
        for (k, v) in [
            ("table", d.table()),
            ("column", d.column()),
            ("constraint", d.constraint()),
            ("type", d.datatype()),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        }
        parts.join(", ")
    } else {
        format!("SQLSTATE {code}: {}", d.message())
    }
}

/// Text for any tokio-postgres error, without row values (never the DETAIL field).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => safe_db_message(d),
        None => e.to_string(),
    }
}
