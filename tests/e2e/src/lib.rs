//! Test infrastructure for dex_collector's end-to-end tests: a stand-in for the web app's
//! collect-bulk endpoint ([`stand_in`]), throwaway PostgreSQL clusters ([`cluster`]), and any
//! number of synthetic companies for the benchmark ([`synthetic`]), a backend's memory
//! ([`backend_memory`]), synthetic DEX texts ([`synthetic_dex`]) and the README's SQL examples
//! ([`readme`]).

pub mod backend_memory;
pub mod cluster;
pub mod deployment;
pub mod readme;
pub mod stand_in;
pub mod synthetic;
pub mod synthetic_dex;
