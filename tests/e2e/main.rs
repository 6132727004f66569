//! End-to-end tests with real components: throwaway PostgreSQL 15 clusters and a real
//! Kafka-protocol broker (tansu). Nothing here is mocked.

mod common;
#[path = "../corpus/mod.rs"]
mod corpus;

mod always_on;
mod audit;
mod backfill;
mod binding;
mod corpus_run;
mod demo;
mod errors;
mod faults;
mod first_run;
mod hold;
mod leaks;
mod observability;
mod pipeline;
mod protocol;
mod restart;
mod review_page;
mod sink_apply;
mod tokens;
mod vault;
