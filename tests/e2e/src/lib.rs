//! Test infrastructure for dex_collector's end-to-end tests: a stand-in for the web app's
//! collect-bulk endpoint ([`stand_in`]) and throwaway PostgreSQL clusters ([`cluster`]).

pub mod cluster;
pub mod deployment;
pub mod stand_in;
