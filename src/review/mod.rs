//! The people around the registry: the reviewer workflow (`workflow`: pending items, proposals,
//! decisions written as reviewable lines), the proposer (`propose`), its HTTP API (`api`), the
//! reviewer's web page (`page`), the one-screen state for ops (`status`) and the compliance
//! role's audited reveal of a token (`reveal`).

pub mod api;
pub mod codes;
pub mod commands;
pub mod error;
pub mod names;
mod page;
pub mod propose;
pub mod registry_write;
pub mod reveal;
pub mod shapes;
mod state;
pub mod status;
pub mod workflow;
