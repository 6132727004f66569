//! veil: a de-identified, near-real-time copy of a production PostgreSQL database for
//! developers. See ARCHITECTURE.md for the data flow and the invariants.

pub mod api;
pub mod audit;
pub mod bench;
pub mod catalog;
pub mod config;
pub mod datagen;
pub mod demo;
pub mod gate;
pub mod metrics;
pub mod pgerr;
pub mod pgoutput;
pub mod publish;
pub mod registry;
pub mod review;
pub mod scanner;
pub mod setup;
pub mod sink;
pub mod source;
pub mod surrogate;
pub mod testkit;
pub mod tls;
pub mod tokenize;
pub mod vault;

/// Protobuf change events (generated from `proto/veil/v1/change.proto`).
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/veil.v1.rs"));

    /// Redacting: shows whether a value is null, unchanged or text (and its length), never the
    /// text itself.
    impl std::fmt::Debug for Value {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match &self.kind {
                None => f.write_str("Value(missing)"),
                Some(value::Kind::Null(_)) => f.write_str("Null"),
                Some(value::Kind::Unchanged(_)) => f.write_str("Unchanged"),
                Some(value::Kind::Text(t)) => write!(f, "Text(<redacted {} bytes>)", t.len()),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn events_never_debug_print_values() {
            let env = Envelope {
                event: Some(envelope::Event::Row(RowChange {
                    table: "public.patients".into(),
                    op: Op::Insert as i32,
                    new_values: vec![Value {
                        kind: Some(value::Kind::Text("123-45-6789".into())),
                    }],
                    old_values: vec![],
                    old_is_full: false,
                })),
                ..Default::default()
            };
            let s = format!("{env:?}");
            assert!(!s.contains("123-45"), "{s}");
            assert!(s.contains("public.patients"));
        }
    }
}
