//! Test infrastructure for dex_collector's end-to-end tests: throwaway PostgreSQL clusters
//! ([`cluster`]) with the extension and a stand-in endpoint ([`deployment`]), any number of
//! synthetic companies ([`synthetic`]), a backend's memory ([`backend_memory`]), synthetic DEX
//! texts ([`synthetic_dex`]) and the SQL examples of the README and docs/ ([`readme`]). The demo
//! (`src/bin/dex-demo.rs`) and the benchmarks (`crates/bench`) build on it too.
//!
//! The stand-in endpoint is a crate of its own (`crates/stand-in`), re-exported here as
//! [`stand_in`].

pub mod backend_memory;
pub mod cluster;
pub mod deployment;
pub mod readme;
pub mod synthetic;
pub mod synthetic_dex;

pub use dex_stand_in as stand_in;
