#!/usr/bin/env bash
# Every test: the pure-Rust unit tests, the #[pg_test] tests in a pgrx-managed PostgreSQL, and
# the end-to-end suites (real clusters, real pg_cron, the stand-in endpoint on loopback).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
setup
cd "$REPO_ROOT"

step "Format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

step "Unit tests (no PostgreSQL): the DEX parser, the jsonb writer, the collector's core against the stand-in"
cargo test -p dex-parse -p jsonb-binary -p dex-collector-core

step "Fuzz smoke: the DEX parser under libFuzzer for 30 seconds, from the real files"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
fuzz_corpus="$(mktemp -d -t dex_parse_corpus.XXXXXX)"
# Stable Rust: libFuzzer's coverage without a sanitizer (-s none needs no nightly flag).
(cd crates/dex-parse && cargo fuzz run parse -s none "$fuzz_corpus" tests/fixtures -- -max_total_time=30 -print_final_stats=1)
rm -rf "$fuzz_corpus"

step "#[pg_test] tests and the extension's unit tests in a pgrx-managed PostgreSQL"
pgdata="$(mktemp -d -t dex_collector_pgrx.XXXXXX)"
trap 'as_root rm -rf "$pgdata"' EXIT
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$pgdata"
    cargo pgrx test pg${PG_MAJOR} --runas postgres --pgdata "$pgdata/data"
else
    cargo pgrx test pg${PG_MAJOR}
fi

# `cargo pgrx test` installed a build with the test schema; install the real one.
install_extension

ensure_supabase_parts

step "End-to-end tests"
cargo test -p dex_collector_e2e
