//! dex_collector without PostgreSQL: what a collection does, as plain Rust that tests with
//! `cargo test` on a machine without a database.
//!
//! - [`endpoint`]: the collect-bulk contract (docs/contract.md) and how one company is collected;
//! - [`target`]: what a target is, and the fair order a run calls targets in;
//! - [`fan_out`]: every target called, a few at a time, under a deadline, interruptible, each
//!   result handed to a [`fan_out::Host`] as it comes;
//! - [`flow`]: how many companies at a time (fixed, or adaptive to the endpoint's load), the pause
//!   a `Retry-After` asks of the whole run, and the run's retry budget;
//! - [`summary`]: a run's results, their counts and the summary's JSON;
//! - [`batch`]: results on their way to the history, a batch at a time;
//! - [`history_sql`]: the statements that record results and delete old history;
//! - [`alert`]: an event to a webhook (signed) and a heartbeat ping, over the same client;
//! - [`pings`]: which finished runs the heartbeat has pinged;
//! - [`problems`]: the background worker's problems, each told at most every so often.
//!
//! The extension supplies the PostgreSQL side: settings, the targets query, the history, locks,
//! and a `Host` that polls the backend's interrupt flags and records results through SPI.

#![forbid(unsafe_code)]

pub mod alert;
pub mod batch;
pub mod endpoint;
pub mod fan_out;
pub mod flow;
pub mod history_sql;
pub mod pings;
pub mod problems;
pub mod summary;
pub mod target;
