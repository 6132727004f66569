//! Tools around veil, not part of the data path: `veil demo`, `veil bench`, the fake-patient
//! generator, the fuzz entry points (`fuzz`) and the test kit (throwaway PostgreSQL clusters and the local broker). Nothing in
//! the data path depends on this folder.

pub mod bench;
pub mod datagen;
pub mod demo;
pub mod fuzz;
pub mod testkit;
