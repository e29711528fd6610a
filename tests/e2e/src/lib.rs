//! Test infrastructure for dex_collector's end-to-end tests: a stand-in for the web app's
//! collect-bulk endpoint ([`stand_in`]), throwaway PostgreSQL clusters ([`cluster`]), and any
//! number of synthetic companies for the benchmark ([`synthetic`]).

pub mod cluster;
pub mod deployment;
pub mod stand_in;
pub mod synthetic;
