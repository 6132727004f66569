//! PostgreSQL plumbing shared by both sides: connections with TLS (`tls`), errors as text without
//! row values and their SQLSTATE classes (`errors`), the catalog (`catalog`), LSNs (`lsn`), decoded rows (`tuple`) and
//! the one quoting helper (`quote`). Nothing here knows about keys, rules or Kafka.

pub mod catalog;
pub mod errors;
pub mod lsn;
pub mod quote;
pub mod tls;
pub mod tuple;
